//! `dovetail policy new`: a policy crate outside this workspace that builds as generated — a
//! working policy, native unit tests through the SDK's harness, the release profile for small
//! components, and a README with the commands that matter.

use std::path::{Path, PathBuf};

/// What the new policy exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scorer,
    Consolidator,
    Both,
}

/// Where the SDK comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// A local checkout's `sdk/` directory.
    Path(PathBuf),
    /// The project's repository at this release's tag.
    Git,
}

impl Sdk {
    /// The SDK of the checkout this binary was built from, when it is still there; else the
    /// repository.
    pub fn detect() -> Sdk {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        match here.canonicalize() {
            Ok(p) if p.join("Cargo.toml").exists() => Sdk::Path(p),
            _ => Sdk::Git,
        }
    }

    fn dependency(&self) -> String {
        match self {
            Sdk::Path(p) => format!(
                "dovetail-policy-sdk = {{ path = {:?} }}",
                p.display().to_string()
            ),
            Sdk::Git => format!(
                "dovetail-policy-sdk = {{ git = \"https://github.com/dovetail-sh/dovetail\", tag = \"v{}\" }}",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

/// Why a crate was not written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "policy name {0:?}: use lowercase letters, digits and '-', starting with a letter (it becomes the crate and file name)"
    )]
    BadName(String),
    #[error("{0} exists: choose another name or directory")]
    Exists(PathBuf),
    #[error("writing {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Writes the crate `name` into `dir/name`; returns the files written.
pub fn new_crate(
    dir: &Path,
    name: &str,
    kind: Kind,
    sdk: &Sdk,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    // The scenario the README's `simulate --compare` runs: the tutorials' clusters, one where
    // launch choices differ and one where consolidation has choices to make.
    const SCORING_CLUSTER: &str = include_str!("../../../docs/tutorial/cluster.yaml");
    const CONSOLIDATION_CLUSTER: &str = include_str!("../../../docs/tutorial/consolidation.yaml");
    let (source, kind_word, role, baseline, cluster) = match kind {
        Kind::Scorer => (
            include_str!("scaffold/scorer.rs.tmpl"),
            "scoring",
            "scoring",
            "cheapest",
            SCORING_CLUSTER,
        ),
        Kind::Consolidator => (
            include_str!("scaffold/consolidator.rs.tmpl"),
            "consolidation",
            "consolidation",
            "balanced",
            CONSOLIDATION_CLUSTER,
        ),
        Kind::Both => (
            include_str!("scaffold/both.rs.tmpl"),
            "scoring and consolidation",
            "scoring",
            "cheapest",
            SCORING_CLUSTER,
        ),
    };
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", name)
            .replace("{{file}}", &name.replace('-', "_"))
            .replace("{{type}}", &type_name)
            .replace("{{sdk}}", &sdk.dependency())
            .replace("{{kind}}", kind_word)
            .replace("{{role}}", role)
            .replace("{{baseline}}", baseline)
    };
    let files = [
        ("Cargo.toml", fill(include_str!("scaffold/Cargo.toml.tmpl"))),
        ("src/lib.rs", fill(source)),
        ("README.md", fill(include_str!("scaffold/README.md.tmpl"))),
        ("cluster.yaml", cluster.to_string()),
        (".gitignore", "/target\n".to_string()),
    ];
    let mut written = Vec::new();
    for (path, text) in files {
        let at = root.join(path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ScaffoldError::Io(parent.into(), e))?;
        }
        std::fs::write(&at, text).map_err(|e| ScaffoldError::Io(at.clone(), e))?;
        written.push(at);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_make_bad_crates_are_refused() {
        let dir = std::env::temp_dir();
        for bad in ["", "My", "9lives", "a_b", "trailing-", "sp ace"] {
            assert!(
                matches!(
                    new_crate(&dir, bad, Kind::Scorer, &Sdk::Git),
                    Err(ScaffoldError::BadName(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = std::env::temp_dir().join(format!("dovetail-scaffold-{}", std::process::id()));
        for (kind, name) in [
            (Kind::Scorer, "s-one"),
            (Kind::Consolidator, "c-two"),
            (Kind::Both, "b-three"),
        ] {
            let files = new_crate(&dir, name, kind, &Sdk::Git).unwrap();
            for f in &files {
                let text = std::fs::read_to_string(f).unwrap();
                assert!(!text.contains("{{"), "{}: {text}", f.display());
            }
            // The README's comparison runs on a scenario the crate carries.
            let readme = std::fs::read_to_string(dir.join(name).join("README.md")).unwrap();
            assert!(readme.contains("-f cluster.yaml"), "{readme}");
            let cluster = std::fs::read_to_string(dir.join(name).join("cluster.yaml")).unwrap();
            let role = if kind == Kind::Consolidator {
                "consolidationPolicy"
            } else {
                "kind: Deployment"
            };
            assert!(cluster.contains(role), "{name}: {cluster}");
        }
        let lib = std::fs::read_to_string(dir.join("b-three/src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct BThree"), "{lib}");
        assert!(lib.contains("export_policy!(BThree)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
