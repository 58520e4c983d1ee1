//! Fetching a policy component from where a Policy says it is, pinned by digest, bounded in
//! size and time; and publishing one to an OCI registry.
//!
//! - `url`: HTTPS only; the body is read up to [`FetchSettings::max_bytes`] and its SHA-256
//!   compared with the Policy's before anything compiles it.
//! - `oci`: an OCI artifact as Kubewarden and the CNCF Wasm OCI format lay it out — one layer of
//!   media type [`WASM_LAYER`] (the component's bytes) and a config of media type [`WASM_CONFIG`].
//!   A tag is resolved to the manifest digest first and the pull is made by that digest, so what
//!   the status records is exactly what was compiled.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client as OciClient, Reference};
use serde_json::json;

use super::error::{PolicyError, Result};
use super::inspect::{ComponentInfo, digest};

/// The label (`=true`) that makes a ConfigMap visible to the Policy controller;
/// `dovetail policy configmap` sets it.
pub const POLICY_CONFIG_MAP_LABEL: &str = "dovetail.sh/policy-component";

/// Media type of the layer holding the component.
pub const WASM_LAYER: &str = oci_client::manifest::WASM_LAYER_MEDIA_TYPE;
/// Media type of the artifact's config.
pub const WASM_CONFIG: &str = oci_client::manifest::WASM_CONFIG_MEDIA_TYPE;
/// Manifest annotation carrying the component's `dovetail:policy` version.
pub const WIT_ANNOTATION: &str = "sh.dovetail.policy.wit-version";

/// Limits and trust of every fetch.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Largest component accepted, in bytes.
    pub max_bytes: u64,
    /// Deadline of one whole fetch.
    pub timeout: Duration,
    /// PEM certificates trusted beside the system's roots (a private CA).
    pub extra_roots: Vec<Vec<u8>>,
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub plain_http: Vec<String>,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            max_bytes: 32 << 20,
            timeout: Duration::from_secs(30),
            extra_roots: Vec::new(),
            plain_http: Vec::new(),
        }
    }
}

/// A fetched component.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// `sha256:…` of `bytes`.
    pub digest: String,
    /// For `oci`: the reference pinned by manifest digest (`registry/repo@sha256:…`).
    pub pinned: Option<String>,
}

/// Downloads `url` (HTTPS) and checks it against `sha256` (hex) before returning it.
pub async fn fetch_url(
    policy: &str,
    settings: &FetchSettings,
    url: &str,
    sha256: &str,
) -> Result<Fetched> {
    let fail = |detail: String| PolicyError::Fetch {
        policy: policy.to_string(),
        source_ref: url.to_string(),
        detail,
    };
    if !url.starts_with("https://") {
        return Err(fail("only https:// URLs are fetched".into()));
    }
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .timeout(settings.timeout)
        .user_agent(concat!("dovetail/", env!("CARGO_PKG_VERSION")));
    for pem in &settings.extra_roots {
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| fail(format!("a trusted certificate does not parse: {e}")))?;
        builder = builder.tls_certs_merge([cert]);
    }
    let client = builder
        .build()
        .map_err(|e| fail(format!("HTTP client: {e}")))?;
    let response = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(chain(&e)))?;
    if let Some(len) = response.content_length()
        && len > settings.max_bytes
    {
        return Err(fail(format!(
            "{len} bytes is more than the {} allowed",
            settings.max_bytes
        )));
    }
    let mut bytes = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| fail(chain(&e)))?;
        if (bytes.len() + chunk.len()) as u64 > settings.max_bytes {
            return Err(fail(format!(
                "more than the {} bytes allowed",
                settings.max_bytes
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    let found = digest(&bytes);
    let expected = format!("sha256:{sha256}");
    if found != expected {
        return Err(PolicyError::DigestMismatch {
            policy: policy.to_string(),
            source_ref: url.to_string(),
            expected,
            found,
        });
    }
    Ok(Fetched {
        bytes,
        digest: found,
        pinned: None,
    })
}

/// Pulls the component of an OCI artifact, resolving a tag to its manifest digest first.
pub async fn fetch_oci(policy: &str, settings: &FetchSettings, reference: &str) -> Result<Fetched> {
    let fail = |detail: String| PolicyError::Fetch {
        policy: policy.to_string(),
        source_ref: reference.to_string(),
        detail,
    };
    let parsed: Reference = reference
        .parse()
        .map_err(|e| fail(format!("not an OCI reference: {e}")))?;
    let client = oci(settings);
    let auth = RegistryAuth::Anonymous;
    let work = async {
        let manifest_digest = match parsed.digest() {
            Some(d) => d.to_string(),
            None => client
                .fetch_manifest_digest(&parsed, &auth)
                .await
                .map_err(|e| fail(format!("resolving the tag: {e}")))?,
        };
        let pinned = parsed.clone_with_digest(manifest_digest.clone());
        let (manifest, _) = client
            .pull_image_manifest(&pinned, &auth)
            .await
            .map_err(|e| fail(format!("reading the manifest: {e}")))?;
        let layers: Vec<_> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER)
            .collect();
        let [layer] = layers[..] else {
            return Err(fail(format!(
                "expected one layer of media type {WASM_LAYER}, found {} (layers: {})",
                layers.len(),
                manifest
                    .layers
                    .iter()
                    .map(|l| l.media_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if layer.size < 0 || layer.size as u64 > settings.max_bytes {
            return Err(fail(format!(
                "the layer is {} bytes, more than the {} allowed",
                layer.size, settings.max_bytes
            )));
        }
        let mut bytes = Vec::with_capacity(layer.size as usize);
        client
            .pull_blob(&pinned, layer, &mut bytes)
            .await
            .map_err(|e| fail(format!("pulling the layer: {e}")))?;
        if bytes.len() as u64 > settings.max_bytes {
            return Err(fail(format!(
                "more than the {} bytes allowed",
                settings.max_bytes
            )));
        }
        let found = digest(&bytes);
        if found != layer.digest {
            return Err(PolicyError::DigestMismatch {
                policy: policy.to_string(),
                source_ref: reference.to_string(),
                expected: layer.digest.clone(),
                found,
            });
        }
        Ok(Fetched {
            bytes,
            digest: found,
            pinned: Some(format!(
                "{}/{}@{manifest_digest}",
                parsed.resolve_registry(),
                parsed.repository()
            )),
        })
    };
    tokio::time::timeout(settings.timeout, work)
        .await
        .map_err(|_| fail(format!("no answer within {:?}", settings.timeout)))?
}

/// Pushes a component as an OCI artifact; returns the pinned reference
/// (`registry/repo@sha256:…` of the manifest).
pub async fn push_oci(
    settings: &FetchSettings,
    bytes: Vec<u8>,
    info: &ComponentInfo,
    title: &str,
    reference: &str,
) -> Result<String> {
    let fail = |detail: String| PolicyError::Publish {
        target: reference.to_string(),
        detail,
    };
    let parsed: Reference = reference
        .parse()
        .map_err(|e| fail(format!("not an OCI reference: {e}")))?;
    let config = json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [info.digest],
        "component": {"exports": info.exports, "imports": info.imports},
    });
    let config = Config::new(
        serde_json::to_vec(&config).expect("json"),
        WASM_CONFIG.to_string(),
        None,
    );
    let layer = ImageLayer::new(
        bytes,
        WASM_LAYER.to_string(),
        Some(BTreeMap::from([(
            "org.opencontainers.image.title".to_string(),
            title.to_string(),
        )])),
    );
    let annotations = BTreeMap::from([
        (WIT_ANNOTATION.to_string(), info.wit_version.clone()),
        (
            "org.opencontainers.image.title".to_string(),
            title.to_string(),
        ),
    ]);
    let manifest = oci_client::manifest::OciImageManifest::build(
        std::slice::from_ref(&layer),
        &config,
        Some(annotations),
    );
    let client = oci(settings);
    let auth = RegistryAuth::Anonymous;
    client
        .push(&parsed, &[layer], config, &auth, Some(manifest))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let digest = client
        .fetch_manifest_digest(&parsed, &auth)
        .await
        .map_err(|e| fail(format!("reading back the manifest digest: {e}")))?;
    Ok(format!(
        "{}/{}@{digest}",
        parsed.resolve_registry(),
        parsed.repository()
    ))
}

/// Largest component a ConfigMap can hold: the API server refuses objects over 1 MiB, and
/// base64 and the object's metadata take their share.
pub const CONFIG_MAP_MAX_BYTES: usize = 700 * 1024;

/// A ConfigMap holding `bytes` in `binaryData` under `policy.wasm`, labelled for the Policy
/// controller's watch, and a Policy named like it that uses it, as two YAML documents.
pub fn config_map_manifests(name: &str, namespace: &str, bytes: &[u8]) -> Result<String> {
    use base64::Engine as _;
    if bytes.len() > CONFIG_MAP_MAX_BYTES {
        return Err(PolicyError::Publish {
            target: format!("ConfigMap {namespace}/{name}"),
            detail: format!(
                "{} bytes do not fit a ConfigMap (at most {CONFIG_MAP_MAX_BYTES}); build with the release profile of `dovetail policy new`, or publish with `dovetail policy push`",
                bytes.len()
            ),
        });
    }
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {POLICY_CONFIG_MAP_LABEL: "true"},
            "annotations": {"dovetail.sh/digest": digest(bytes)},
        },
        "binaryData": {"policy.wasm": base64::engine::general_purpose::STANDARD.encode(bytes)},
    });
    let policy = json!({
        "apiVersion": "dovetail.sh/v1",
        "kind": "Policy",
        "metadata": {"name": name},
        "spec": {"source": {"configMap": {"namespace": namespace, "name": name, "key": "policy.wasm"}}},
    });
    let yaml = |v: &serde_json::Value| serde_norway::to_string(v).expect("yaml");
    Ok(format!("{}---\n{}", yaml(&config_map), yaml(&policy)))
}

fn oci(settings: &FetchSettings) -> OciClient {
    OciClient::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(settings.plain_http.clone()),
        extra_root_certificates: settings
            .extra_roots
            .iter()
            .map(|pem| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        read_timeout: Some(settings.timeout),
        connect_timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    })
}

/// An error with its causes, on one line (reqwest's own message omits them).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
