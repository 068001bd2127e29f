//! `skiff images`: build OCI image archives without a registry and import them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use skiff_agent::image::{build_archive, import_archive, ImageConfig, LayerSource};

/// `skiff images …`
#[derive(Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    command: ImagesCommand,
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Write an OCI image-layout archive from a root filesystem directory or one binary.
    Build(BuildArgs),
    /// Import an image archive into the agent's containerd (`k8s.io` namespace).
    Import(ImportArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// A directory that becomes the image's root filesystem.
    #[arg(long, conflicts_with = "binary", required_unless_present = "binary")]
    rootfs: Option<PathBuf>,
    /// One executable, stored as `/<file name>` and used as the entrypoint.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The image reference (`name:tag`).
    #[arg(long)]
    tag: String,
    /// The archive to write.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// The image's entrypoint (repeat for each word).
    #[arg(long)]
    entrypoint: Vec<String>,
    /// The image's default command (repeat for each word).
    #[arg(long)]
    cmd: Vec<String>,
    /// `NAME=VALUE` environment of the image.
    #[arg(long)]
    env: Vec<String>,
    /// The working directory.
    #[arg(long)]
    workdir: Option<String>,
}

#[derive(Args)]
struct ImportArgs {
    /// The archive to import.
    file: PathBuf,
    /// containerd's socket (default: the agent's own under the data dir).
    #[arg(long)]
    address: Option<PathBuf>,
    /// skiff's data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub async fn run(args: ImagesArgs) -> Result<()> {
    match args.command {
        ImagesCommand::Build(b) => {
            let mut config = ImageConfig {
                entrypoint: b.entrypoint,
                cmd: b.cmd,
                env: b.env,
                working_dir: b.workdir,
            };
            let contents;
            let name;
            let source = match (&b.rootfs, &b.binary) {
                (Some(dir), _) => LayerSource::Rootfs(dir),
                (None, Some(bin)) => {
                    contents =
                        std::fs::read(bin).with_context(|| format!("read {}", bin.display()))?;
                    name = bin
                        .file_name()
                        .context("binary has no file name")?
                        .to_string_lossy()
                        .into_owned();
                    if config.entrypoint.is_empty() {
                        config.entrypoint = vec![format!("/{name}")];
                    }
                    LayerSource::Binary {
                        name: &name,
                        contents: &contents,
                    }
                }
                (None, None) => anyhow::bail!("one of --rootfs and --binary is required"),
            };
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&b.output)
                    .with_context(|| format!("create {}", b.output.display()))?,
            );
            let id = build_archive(&source, &b.tag, &config, &mut file)?;
            std::io::Write::flush(&mut file)?;
            println!("{} {id}", skiff_agent::image::normalize_reference(&b.tag));
            Ok(())
        }
        ImagesCommand::Import(i) => {
            let sock = i.address.unwrap_or_else(|| {
                skiff_agent::runtime::ContainerdPaths::new(
                    &i.data_dir
                        .unwrap_or_else(crate::default_data_dir)
                        .join("agent"),
                )
                .socket()
            });
            import_archive(&sock, &i.file).await
        }
    }
}
