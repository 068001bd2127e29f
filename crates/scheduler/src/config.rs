//! Configuration in upstream's `KubeSchedulerConfiguration` shape
//! (`kubescheduler.config.k8s.io/v1`) and the registry that turns it into frameworks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::framework::{Framework, Plugin, WeightedScore};
use crate::plugins;

/// The scheduler name pods get by default.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// A plugin constructor taking the plugin's `args`.
pub type Factory = fn(Option<&serde_json::Value>) -> anyhow::Result<Arc<dyn Plugin>>;

/// Plugin names to constructors (upstream's in-tree registry, for the plugins skiff has).
pub fn registry() -> HashMap<&'static str, Factory> {
    let mut r: HashMap<&'static str, Factory> = HashMap::new();
    r.insert(plugins::queuesort::NAME, |_| {
        Ok(Arc::new(plugins::queuesort::PrioritySort))
    });
    r.insert(plugins::nodename::NAME, |_| {
        Ok(Arc::new(plugins::nodename::NodeName))
    });
    r.insert(plugins::nodeunschedulable::NAME, |_| {
        Ok(Arc::new(plugins::nodeunschedulable::NodeUnschedulable))
    });
    r.insert(plugins::nodeports::NAME, |_| {
        Ok(Arc::new(plugins::nodeports::NodePorts))
    });
    r.insert(plugins::tainttoleration::NAME, |_| {
        Ok(Arc::new(plugins::tainttoleration::TaintToleration))
    });
    r.insert(plugins::nodeaffinity::NAME, |_| {
        Ok(Arc::new(plugins::nodeaffinity::NodeAffinity))
    });
    r.insert(plugins::noderesources::FIT, |a| {
        Ok(Arc::new(plugins::noderesources::Fit::new(a)?))
    });
    r.insert(plugins::noderesources::BALANCED, |a| {
        Ok(Arc::new(plugins::noderesources::Balanced::new(a)?))
    });
    r.insert(plugins::imagelocality::NAME, |_| {
        Ok(Arc::new(plugins::imagelocality::ImageLocality))
    });
    r.insert(plugins::interpodaffinity::NAME, |a| {
        Ok(Arc::new(plugins::interpodaffinity::InterPodAffinity::new(
            a,
        )?))
    });
    r.insert(plugins::podtopologyspread::NAME, |a| {
        Ok(Arc::new(
            plugins::podtopologyspread::PodTopologySpread::new(a)?,
        ))
    });
    r.insert(plugins::defaultpreemption::NAME, |_| {
        Ok(Arc::new(plugins::defaultpreemption::DefaultPreemption))
    });
    r.insert(plugins::defaultbinder::NAME, |_| {
        Ok(Arc::new(plugins::defaultbinder::DefaultBinder))
    });
    r
}

/// Upstream v1's default multi-point plugins with their score weights, in order.
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    ("PrioritySort", 0),
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("DefaultPreemption", 0),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", 0),
];

/// A plugin reference in a plugin set.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct PluginRef {
    /// The plugin name (`*` in `disabled` means all defaults).
    pub name: String,
    /// The score weight.
    #[serde(default)]
    pub weight: Option<i64>,
}

/// Enabled and disabled plugins at one extension point.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct PluginSet {
    /// Plugins added after the defaults.
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    /// Default plugins removed.
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

/// `profiles[].plugins`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Plugins {
    /// Plugins for every extension point they implement.
    #[serde(default)]
    pub multi_point: PluginSet,
    /// QueueSort.
    #[serde(default)]
    pub queue_sort: PluginSet,
    /// PreFilter.
    #[serde(default)]
    pub pre_filter: PluginSet,
    /// Filter.
    #[serde(default)]
    pub filter: PluginSet,
    /// PostFilter.
    #[serde(default)]
    pub post_filter: PluginSet,
    /// PreScore.
    #[serde(default)]
    pub pre_score: PluginSet,
    /// Score.
    #[serde(default)]
    pub score: PluginSet,
    /// Reserve.
    #[serde(default)]
    pub reserve: PluginSet,
    /// Bind.
    #[serde(default)]
    pub bind: PluginSet,
}

/// `profiles[].pluginConfig[]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PluginConfig {
    /// The plugin name.
    pub name: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Option<serde_json::Value>,
}

/// One scheduling profile.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The `schedulerName` pods select this profile by.
    #[serde(default)]
    pub scheduler_name: Option<String>,
    /// Per-profile `percentageOfNodesToScore`.
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Plugin sets.
    #[serde(default)]
    pub plugins: Option<Plugins>,
    /// Plugin arguments.
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
}

/// The scheduler's configuration (`KubeSchedulerConfiguration`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerConfig {
    /// Must be `kubescheduler.config.k8s.io/v1` when given.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Must be `KubeSchedulerConfiguration` when given.
    #[serde(default)]
    pub kind: Option<String>,
    /// Percentage of nodes to find feasible before scoring (0 = adaptive).
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Initial backoff of unschedulable pods, seconds (default 1).
    #[serde(default)]
    pub pod_initial_backoff_seconds: Option<u64>,
    /// Maximum backoff, seconds (default 10).
    #[serde(default)]
    pub pod_max_backoff_seconds: Option<u64>,
    /// Profiles (one `default-scheduler` profile when empty).
    #[serde(default)]
    pub profiles: Vec<Profile>,
    /// Upstream's `parallelism` (default 16); skiff allows eight concurrent bind calls per
    /// unit.
    #[serde(default)]
    pub parallelism: Option<usize>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            api_version: Some("kubescheduler.config.k8s.io/v1".into()),
            kind: Some("KubeSchedulerConfiguration".into()),
            percentage_of_nodes_to_score: None,
            pod_initial_backoff_seconds: None,
            pod_max_backoff_seconds: None,
            profiles: Vec::new(),
            parallelism: None,
        }
    }
}

impl SchedulerConfig {
    /// Parses a YAML or JSON configuration.
    pub fn parse(text: &str) -> anyhow::Result<SchedulerConfig> {
        let c: SchedulerConfig =
            serde_yaml::from_str(text).context("invalid scheduler configuration")?;
        if let Some(v) = c.api_version.as_deref() {
            if v != "kubescheduler.config.k8s.io/v1" {
                bail!("unsupported apiVersion {v:?}: want kubescheduler.config.k8s.io/v1");
            }
        }
        if let Some(k) = c.kind.as_deref() {
            if k != "KubeSchedulerConfiguration" {
                bail!("unsupported kind {k:?}: want KubeSchedulerConfiguration");
            }
        }
        if let Some(p) = c.percentage_of_nodes_to_score {
            if p > 100 {
                bail!("percentageOfNodesToScore: Invalid value: {p}: not in valid range [0-100]");
            }
        }
        c.frameworks()?;
        Ok(c)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<SchedulerConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        SchedulerConfig::parse(&text)
    }

    /// Initial backoff.
    pub fn initial_backoff(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.pod_initial_backoff_seconds.unwrap_or(1))
    }

    /// Maximum backoff.
    pub fn max_backoff(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.pod_max_backoff_seconds.unwrap_or(10))
    }

    /// Builds one framework per profile.
    pub fn frameworks(&self) -> anyhow::Result<Vec<Framework>> {
        let reg = registry();
        let default_profile = [Profile::default()];
        let profiles: &[Profile] = if self.profiles.is_empty() {
            &default_profile
        } else {
            &self.profiles
        };
        let mut out: Vec<Framework> = Vec::new();
        for p in profiles {
            let fw = build_profile(&reg, p, self.percentage_of_nodes_to_score.unwrap_or(0))?;
            if out.iter().any(|f| f.scheduler_name == fw.scheduler_name) {
                bail!("profiles: duplicate schedulerName {:?}", fw.scheduler_name);
            }
            out.push(fw);
        }
        Ok(out)
    }
}

fn disabled(set: &PluginSet, name: &str) -> bool {
    set.disabled.iter().any(|d| d.name == name || d.name == "*")
}

fn build_profile(
    reg: &HashMap<&'static str, Factory>,
    p: &Profile,
    global_pct: u32,
) -> anyhow::Result<Framework> {
    let plugins = p.plugins.clone().unwrap_or_default();
    let mut instances: HashMap<String, Arc<dyn Plugin>> = HashMap::new();
    let mut get = |name: &str| -> anyhow::Result<Arc<dyn Plugin>> {
        if let Some(i) = instances.get(name) {
            return Ok(i.clone());
        }
        let f = reg
            .get(name)
            .with_context(|| format!("plugin {name:?} does not exist"))?;
        let args = p
            .plugin_config
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.args.as_ref());
        let i = f(args).with_context(|| format!("initializing plugin {name:?}"))?;
        instances.insert(name.to_string(), i.clone());
        Ok(i)
    };
    // (name, weight) per extension point, defaults first, then multiPoint, then the point's own.
    let mut fw = Framework {
        scheduler_name: p
            .scheduler_name
            .clone()
            .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.into()),
        percentage_of_nodes_to_score: p.percentage_of_nodes_to_score.unwrap_or(global_pct),
        ..Default::default()
    };
    let mut multi: Vec<(String, i64)> = DEFAULT_PLUGINS
        .iter()
        .filter(|(n, _)| !disabled(&plugins.multi_point, n))
        .map(|(n, w)| (n.to_string(), *w))
        .collect();
    for e in &plugins.multi_point.enabled {
        multi.retain(|(n, _)| *n != e.name);
        multi.push((e.name.clone(), e.weight.unwrap_or(0)));
    }
    let points: [(&PluginSet, usize); 8] = [
        (&plugins.queue_sort, 0),
        (&plugins.pre_filter, 1),
        (&plugins.filter, 2),
        (&plugins.post_filter, 3),
        (&plugins.pre_score, 4),
        (&plugins.score, 5),
        (&plugins.reserve, 6),
        (&plugins.bind, 7),
    ];
    for (set, point) in points {
        let mut list: Vec<(String, i64)> = multi
            .iter()
            .filter(|(n, _)| !disabled(set, n))
            .cloned()
            .collect();
        for e in &set.enabled {
            list.retain(|(n, _)| *n != e.name);
            let w = e.weight.unwrap_or_else(|| {
                multi
                    .iter()
                    .find(|(n, _)| *n == e.name)
                    .map(|(_, w)| *w)
                    .unwrap_or(0)
            });
            list.push((e.name.clone(), w));
        }
        for (name, weight) in list {
            let pl = get(&name)?;
            let implements = match point {
                0 => pl.as_queue_sort().is_some(),
                1 => pl.as_pre_filter().is_some(),
                2 => pl.as_filter().is_some(),
                3 => pl.as_post_filter().is_some(),
                4 => pl.as_pre_score().is_some(),
                5 => pl.as_score().is_some(),
                6 => pl.as_reserve().is_some(),
                _ => pl.as_bind().is_some(),
            };
            let explicit = set.enabled.iter().any(|e| e.name == name);
            if !implements {
                if explicit {
                    bail!("plugin {name:?} does not extend this extension point");
                }
                continue;
            }
            match point {
                0 => fw.queue_sort = Some(pl),
                1 => fw.pre_filter.push(pl),
                2 => fw.filter.push(pl),
                3 => fw.post_filter.push(pl),
                4 => fw.pre_score.push(pl),
                5 => fw.score.push(WeightedScore {
                    plugin: pl,
                    weight: if weight <= 0 { 1 } else { weight },
                }),
                6 => fw.reserve.push(pl),
                _ => fw.bind.push(pl),
            }
        }
    }
    if fw.bind.is_empty() {
        bail!(
            "at least one bind plugin is needed for profile {:?}",
            fw.scheduler_name
        );
    }
    Ok(fw)
}

/// The default profile's framework.
pub fn default_framework() -> Framework {
    SchedulerConfig::default()
        .frameworks()
        .expect("the default profile is valid")
        .remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[Arc<dyn Plugin>]) -> Vec<&'static str> {
        v.iter().map(|p| p.name()).collect()
    }

    #[test]
    fn default_profile() {
        let fw = default_framework();
        assert_eq!(fw.scheduler_name, "default-scheduler");
        assert_eq!(
            names(&fw.filter),
            vec![
                "NodeUnschedulable",
                "NodeName",
                "TaintToleration",
                "NodeAffinity",
                "NodePorts",
                "NodeResourcesFit",
                "PodTopologySpread",
                "InterPodAffinity"
            ]
        );
        let weights: Vec<(&str, i64)> = fw
            .score
            .iter()
            .map(|s| (s.plugin.name(), s.weight))
            .collect();
        assert_eq!(
            weights,
            vec![
                ("TaintToleration", 3),
                ("NodeAffinity", 2),
                ("NodeResourcesFit", 1),
                ("PodTopologySpread", 2),
                ("InterPodAffinity", 2),
                ("NodeResourcesBalancedAllocation", 1),
                ("ImageLocality", 1)
            ]
        );
        assert_eq!(names(&fw.post_filter), vec!["DefaultPreemption"]);
    }

    #[test]
    fn profiles_from_yaml() {
        let c = SchedulerConfig::parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packing
  plugins:
    score:
      disabled:
      - name: NodeResourcesBalancedAllocation
      enabled:
      - name: NodeResourcesFit
        weight: 5
    postFilter:
      disabled:
      - name: "*"
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: cpu
          weight: 1
"#,
        )
        .unwrap();
        let fws = c.frameworks().unwrap();
        assert_eq!(fws.len(), 2);
        assert_eq!(fws[1].scheduler_name, "bin-packing");
        assert_eq!(fws[1].percentage_of_nodes_to_score, 30);
        assert!(fws[1].post_filter.is_empty());
        let w: Vec<(&str, i64)> = fws[1]
            .score
            .iter()
            .map(|s| (s.plugin.name(), s.weight))
            .collect();
        assert!(w.contains(&("NodeResourcesFit", 5)));
        assert!(!w
            .iter()
            .any(|(n, _)| *n == "NodeResourcesBalancedAllocation"));
        assert!(SchedulerConfig::parse("apiVersion: v2\n").is_err());
        assert!(SchedulerConfig::parse(
            "profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: Nope\n"
        )
        .is_err());
        assert!(SchedulerConfig::parse(
            "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: Weird\n"
        )
        .is_err());
    }
}
