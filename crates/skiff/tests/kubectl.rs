//! The stock kubectl against the real `skiff server`.

mod common;

use std::time::Duration;

use common::{wait_for, Server};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
  labels: {app: web}
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
        env:
        - name: A
          value: "1"
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
"#;

#[test]
fn apply_get_patch_label_scale_delete() {
    let s = Server::start();
    let out = s.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("namespace/shop created"), "{text}");
    assert!(text.contains("deployment.apps/web created"), "{text}");

    // Applying again changes nothing.
    let out = s.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployment.apps/web unchanged"));

    // Tables.
    let t = s.ok(&["get", "deployments", "-n", "shop"]);
    assert!(t.starts_with("NAME"), "{t}");
    assert!(
        t.contains("READY") && t.contains("UP-TO-DATE") && t.contains("AVAILABLE"),
        "{t}"
    );
    assert!(t.contains("web"), "{t}");
    let svc = s.ok(&["get", "svc", "web", "-n", "shop", "-o", "wide"]);
    assert!(
        svc.contains("NodePort") && svc.contains("SELECTOR") && svc.contains("app=web"),
        "{svc}"
    );
    let ip = s.ok(&[
        "get",
        "svc",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(ip.starts_with("10.43."), "cluster IP {ip}");
    let np = s.ok(&[
        "get",
        "svc",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let np: u16 = np.parse().expect("node port");
    assert!((30000..=32767).contains(&np));

    // Output formats.
    let y = s.ok(&["get", "cm", "settings", "-n", "shop", "-o", "yaml"]);
    assert!(
        y.contains("color: blue") && y.contains("resourceVersion:") && y.contains("uid:"),
        "{y}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "deploy", "web", "-n", "shop", "-o", "json"])).unwrap();
    assert_eq!(
        j["spec"]["strategy"]["type"], "RollingUpdate",
        "defaults applied"
    );
    assert_eq!(j["metadata"]["generation"], 1);
    let d = s.ok(&["describe", "deployment", "web", "-n", "shop"]);
    assert!(
        d.contains("Name:") && d.contains("web") && d.contains("nginx:1.27"),
        "{d}"
    );

    // Patches of each type.
    s.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ]);
    s.ok(&["patch", "deploy", "web", "-n", "shop", "--type", "json", "-p", r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"nginx:1.28"}]"#]);
    s.ok(&["patch", "deploy", "web", "-n", "shop", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"B","value":"2"}]}]}}}}"#]);
    let j: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "deploy", "web", "-n", "shop", "-o", "json"])).unwrap();
    assert_eq!(j["spec"]["replicas"], 3);
    let c = &j["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.28");
    let envs: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    // Upstream puts elements new to a merged list before the existing ones.
    assert_eq!(envs, ["B", "A"], "strategic merge merged env by name");
    assert_eq!(j["metadata"]["generation"], 4);

    // Label, annotate, scale.
    s.ok(&["label", "cm", "settings", "-n", "shop", "tier=backend"]);
    s.ok(&["annotate", "cm", "settings", "-n", "shop", "note=hello"]);
    let l = s.ok(&[
        "get",
        "cm",
        "-n",
        "shop",
        "-l",
        "tier=backend",
        "-o",
        "name",
    ]);
    assert_eq!(l.trim(), "configmap/settings");
    s.ok(&[
        "scale",
        "deployment",
        "web",
        "-n",
        "shop",
        "--replicas",
        "5",
    ]);
    let r = s.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(r, "5");

    // Delete by name, by label, --all.
    s.ok(&[
        "create",
        "configmap",
        "one",
        "-n",
        "shop",
        "--from-literal=a=b",
    ]);
    s.ok(&[
        "create",
        "configmap",
        "two",
        "-n",
        "shop",
        "--from-literal=a=b",
    ]);
    s.ok(&["label", "cm", "two", "-n", "shop", "gone=yes"]);
    s.ok(&["delete", "cm", "one", "-n", "shop"]);
    s.ok(&["delete", "cm", "-n", "shop", "-l", "gone=yes"]);
    let names = s.ok(&["get", "cm", "-n", "shop", "-o", "name"]);
    assert!(
        !names.contains("configmap/one") && !names.contains("configmap/two"),
        "{names}"
    );
    s.ok(&["delete", "cm", "--all", "-n", "shop"]);
    // As upstream, the root-CA publisher puts `kube-root-ca.crt` back at once.
    let names = s.ok(&["get", "cm", "-n", "shop", "-o", "name"]);
    assert!(
        names
            .lines()
            .all(|n| n.trim() == "configmap/kube-root-ca.crt"),
        "{names}"
    );
    let err = s.fails(&["get", "cm", "one", "-n", "shop"]);
    assert!(
        err.contains("Error from server (NotFound): configmaps \"one\" not found"),
        "{err}"
    );
}

#[test]
fn create_from_literals_files_and_dry_run() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("app.properties");
    std::fs::write(&f, "x=1\n").unwrap();
    let from_file = format!("--from-file={}", f.display());
    s.ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=k=v",
        &from_file,
    ]);
    let j: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "cm", "cfg", "-o", "json"])).unwrap();
    assert_eq!(j["data"]["k"], "v");
    assert_eq!(j["data"]["app.properties"], "x=1\n");
    s.ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=password=s3cret",
    ]);
    let t = s.ok(&["get", "secret", "pw"]);
    assert!(t.contains("Opaque"), "{t}");
    let v = s.ok(&["get", "secret", "pw", "-o", "jsonpath={.data.password}"]);
    assert_eq!(v, "czNjcmV0");

    let out = s.ok(&[
        "create",
        "configmap",
        "dry",
        "--from-literal=a=b",
        "--dry-run=server",
    ]);
    assert!(out.contains("created (server dry run)"), "{out}");
    let err = s.fails(&["get", "cm", "dry"]);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn invalid_and_duplicate_objects_get_upstream_errors() {
    let s = Server::start();
    s.ok(&["create", "configmap", "dup", "--from-literal=a=b"]);
    // kubectl's generator commands word it their way; `create -f` prints the server's reason.
    let err = s.fails(&["create", "configmap", "dup", "--from-literal=a=b"]);
    assert!(
        err.contains("failed to create configmap: configmaps \"dup\" already exists"),
        "{err}"
    );
    let dup = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\n";
    let out = s.kubectl_stdin(&["create", "-f", "-"], dup);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error from server (AlreadyExists)")
            && err.contains("configmaps \"dup\" already exists"),
        "{err}"
    );
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n";
    let out = s.kubectl_stdin(&["create", "-f", "-"], bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is invalid") && err.contains("metadata.name"),
        "{err}"
    );
    let pod =
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n";
    let out = s.kubectl_stdin(&["create", "-f", "-"], pod);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.containers[0].image: Required value"),
        "{err}"
    );
    let out = s.kubectl_stdin(
        &["create", "-n", "nope", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("namespaces \"nope\" not found"), "{err}");
}

#[test]
fn discovery_explain_cluster_info_and_raw_endpoints() {
    let s = Server::start();
    let r = s.ok(&["api-resources"]);
    for want in [
        "pods",
        "deployments",
        "cronjobs",
        "leases",
        "endpointslices",
        "priorityclasses",
    ] {
        assert!(r.contains(want), "api-resources lacks {want}: {r}");
    }
    let v = s.ok(&["api-versions"]);
    for want in [
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "autoscaling/v1",
        "v1",
        "networking.k8s.io/v1",
    ] {
        assert!(
            v.lines().any(|l| l == want),
            "api-versions lacks {want}: {v}"
        );
    }
    let e = s.ok(&["explain", "pods.spec.containers"]);
    assert!(
        e.contains("KIND:") && e.contains("Pod") && e.contains("image"),
        "{e}"
    );
    let ci = s.ok(&["cluster-info"]);
    assert!(
        ci.contains("Kubernetes control plane is running at https://127.0.0.1:"),
        "{ci}"
    );
    assert_eq!(s.ok(&["get", "--raw", "/healthz"]), "ok");
    let ver = s.ok(&["version", "-o", "json"]);
    assert!(ver.contains("\"minor\": \"32\""), "{ver}");
    let ns = s.ok(&["get", "ns", "-o", "name"]);
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{want}")), "{ns}");
    }
    let ep = s.ok(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(ep, "10.43.0.1");
    let m = s.ok(&["get", "--raw", "/metrics"]);
    assert!(m.contains("apiserver_request_total{"), "metrics");
}

#[test]
fn get_watch_sees_events() {
    let s = Server::start();
    let mut child = std::process::Command::new(common::KUBECTL)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args([
            "get",
            "configmaps",
            "-w",
            "-o",
            "name",
            "--request-timeout",
            "60s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // The watch is up once a created object shows; create until it does.
    let mut seen = Vec::new();
    wait_for(
        "watch to report a created configmap",
        Duration::from_secs(30),
        || {
            let name = format!("w{}", seen.len());
            s.ok(&["create", "configmap", &name, "--from-literal=a=b"]);
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
                seen.push(l);
            }
            seen.iter()
                .any(|l| l.starts_with("configmap/w"))
                .then_some(())
        },
    );
    s.ok(&["create", "configmap", "later", "--from-literal=a=b"]);
    wait_for(
        "watch to report configmap/later",
        Duration::from_secs(20),
        || {
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                seen.push(l);
            }
            seen.iter().any(|l| l == "configmap/later").then_some(())
        },
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn server_side_apply_and_edit() {
    let s = Server::start();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\n";
    let out = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], cm);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configmap/ssa serverside-applied"));
    let mf = s.ok(&[
        "get",
        "cm",
        "ssa",
        "-o",
        "jsonpath={.metadata.managedFields[0].manager}",
        "--show-managed-fields",
    ]);
    assert_eq!(mf, "kubectl");
    // Another manager taking the same field conflicts unless forced.
    let cm2 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"2\"\n";
    let out = s.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            "-",
        ],
        cm2,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("conflict"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "other",
            "-f",
            "-",
        ],
        cm2,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"]), "2");

    // kubectl edit through KUBE_EDITOR: a script that rewrites the value.
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/a: \"2\"/a: \"edited\"/' \"$1\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .unwrap();
    let out = std::process::Command::new(common::KUBECTL)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["edit", "cm", "ssa"])
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"]),
        "edited"
    );
}

#[test]
fn bad_input_gets_status_and_changes_nothing() {
    let s = Server::start();
    let before = s.ok(&[
        "get",
        "cm",
        "-A",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.json");
    std::fs::write(&f, "{not json").unwrap();
    let fp = f.display().to_string();
    let err = s.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        &fp,
    ]);
    assert!(err.contains("BadRequest"), "{err}");
    std::fs::write(
        &f,
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
    )
    .unwrap();
    let err = s.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        &fp,
    ]);
    assert!(err.contains("BadRequest"), "{err}");
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    std::fs::write(&f, big).unwrap();
    let err = s.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        &fp,
    ]);
    assert!(
        err.contains("RequestEntityTooLarge") || err.contains("413") || err.contains("too large"),
        "{err}"
    );
    // A stale update is a conflict.
    s.ok(&["create", "configmap", "c", "--from-literal=a=b"]);
    let mut obj: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "cm", "c", "-o", "json"])).unwrap();
    s.ok(&["label", "cm", "c", "x=y"]);
    obj["data"]["a"] = serde_json::json!("stale");
    std::fs::write(&f, obj.to_string()).unwrap();
    let err = s.fails(&["replace", "-f", &fp]);
    assert!(
        err.contains("Conflict") && err.contains("the object has been modified"),
        "{err}"
    );
    assert_eq!(s.ok(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]), "b");
    let after = s.ok(&["get", "cm", "big", "--ignore-not-found", "-o", "name"]);
    assert!(after.is_empty());
    let _ = before;
}

#[test]
fn authentication_by_certificate_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cr3t-token,alice,1001,\"dev,ops\"\n").unwrap();
    let data = dir.path().join("data");
    let s = Server::start_with(&data, 0, &["--token-file", tokens.to_str().unwrap()]);
    let server = format!("https://127.0.0.1:{}", s.port);
    let ca = data.join("tls/ca.crt");
    let base = [
        "--kubeconfig",
        "/dev/null",
        "--server",
        &server,
        "--certificate-authority",
        ca.to_str().unwrap(),
    ];
    let run = |extra: &[&str]| {
        std::process::Command::new(common::KUBECTL)
            .args(base)
            .args(extra)
            .output()
            .unwrap()
    };
    // A valid bearer token is accepted.
    let out = run(&[
        "--token",
        "s3cr3t-token",
        "get",
        "ns",
        "default",
        "-o",
        "name",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/default"
    );
    // A wrong token and no credentials get 401.
    let out = run(&["--token", "wrong", "get", "ns"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No credentials at all (curl: kubectl would prompt for a user name).
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert", ca.to_str().unwrap()])
        .arg(format!("{server}/api/v1/namespaces"))
        .output()
        .expect("curl is installed by .ci/run");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["code"], 401, "{status}");
    assert_eq!(status["reason"], "Unauthorized");
    // Health and version need no credentials.
    let anonymous = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "--cacert", ca.to_str().unwrap()])
            .arg(format!("{server}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(anonymous("/healthz"), "ok");
    assert!(anonymous("/version").contains("\"major\""));
    // The admin kubeconfig's client certificate works, and the file is private.
    s.ok(&["get", "ns", "default"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.kubeconfig)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn apply_of_a_list_validates_with_openapi_v2() {
    let s = Server::start();
    // kubectl validates `kind: List` manifests client-side against /openapi/v2 (protobuf).
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: l1\n  data: {a: b}\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], list);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.ok(&["get", "cm", "l1", "-o", "jsonpath={.data.a}"]), "b");
    let bad = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: l2\n  bogusField: 1\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], bad);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bogusField"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
