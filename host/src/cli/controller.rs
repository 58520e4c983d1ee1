//! `dovetail controller` and `dovetail record`: the processes that run against a cluster until
//! stopped.

use anyhow::{Context, Result};

use crate::{CloudKind, ControllerArgs};

/// `dovetail controller`: until SIGTERM or Ctrl-C.
pub(crate) fn controller(args: ControllerArgs) -> Result<()> {
    let config = dovetail::bridge::Bridge::own()?
        .wait(kube::Config::infer())
        .context("no Kubernetes configuration: run in a cluster, or set KUBECONFIG")?;
    let mut aws = dovetail::cloud::aws::AwsSettings::new(&args.aws_region, &args.cluster_name);
    aws.endpoint = args.aws_endpoint;
    args.cluster.apply(&mut aws);
    let settings = dovetail::kubernetes::Settings {
        cloud: match args.cloud {
            CloudKind::Aws => dovetail::kubernetes::Cloud::Aws,
            CloudKind::Sim => dovetail::kubernetes::Cloud::Sim,
        },
        aws,
        interruption_queue: args.interruption_queue,
        zones: args.zones,
        core: dovetail::controller::Settings {
            batch_idle: args.batch_idle_duration,
            batch_max: args.batch_max_duration,
            feature_gates: args.feature_gates,
            registration_ttl: args.registration_ttl,
            orphan_grace: args.orphan_grace_period,
            ..Default::default()
        },
        sync_timeout: args.cache_sync_timeout,
        instance: std::env::var("POD_NAME").unwrap_or_else(|_| {
            // Out of a cluster: unique per process, so two replicas never share an identity.
            format!("dovetail-{}", std::process::id())
        }),
        operation: dovetail::kubernetes::Operation {
            leader_election: args.leader_elect.then(|| {
                dovetail::kubernetes::leader::LeaderElection {
                    namespace: args.system_namespace,
                    duration: args.leader_election_lease_duration,
                    ..Default::default()
                }
            }),
            metrics_addr: (args.metrics_port != 0)
                .then(|| std::net::SocketAddr::from(([0, 0, 0, 0], args.metrics_port))),
            health_addr: (args.health_probe_port != 0)
                .then(|| std::net::SocketAddr::from(([0, 0, 0, 0], args.health_probe_port))),
            kube_qps: args.kube_client_qps,
            kube_burst: args.kube_client_burst,
            ..Default::default()
        },
        policy_fetch: dovetail::policy::source::FetchSettings {
            max_bytes: args.policy_max_mib << 20,
            extra_roots: match &args.policy_ca_bundle {
                Some(path) => vec![std::fs::read(path).with_context(|| {
                    format!("POLICY_CA_BUNDLE: cannot read {}", path.display())
                })?],
                None => Vec::new(),
            },
            plain_http: args.policy_plain_http_registries,
            ..Default::default()
        },
        policy_config_map_namespaces: args.policy_configmap_namespaces,
    };
    let shutdown = dovetail::kubernetes::Shutdown::default();
    let stop = shutdown.clone();
    ctrlc_or_term(move || {
        tracing::info!("stopping");
        stop.stop();
    })?;
    dovetail::kubernetes::run(config, settings, shutdown)?;
    Ok(())
}

/// `dovetail record`: the cluster KUBECONFIG names, as a journal, until Ctrl-C, SIGTERM or
/// `--duration`.
pub(crate) fn record(opts: dovetail::kubernetes::record::RecordOptions) -> Result<()> {
    let config = dovetail::bridge::Bridge::own()?
        .wait(kube::Config::infer())
        .context("no Kubernetes configuration: set KUBECONFIG to the cluster to record")?;
    let stop = dovetail::kubernetes::Shutdown::default();
    let on_signal = stop.clone();
    ctrlc_or_term(move || on_signal.stop())?;
    eprintln!(
        "recording {} into {} (every {:?}; Ctrl-C stops)",
        config.cluster_url,
        opts.out.display(),
        opts.interval
    );
    let r = dovetail::kubernetes::record::record(config, &opts, stop)?;
    eprintln!(
        "recorded {}: {} changes, {} bytes in {} part{}",
        dovetail::sim::report::clock(r.seconds),
        r.steps,
        r.bytes,
        r.parts,
        if r.parts == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Calls `then` on its own thread at the first SIGTERM or Ctrl-C.
pub(crate) fn ctrlc_or_term(then: impl FnOnce() + Send + 'static) -> Result<()> {
    let rt = dovetail::bridge::Bridge::own()?;
    // Registered before returning, so a signal that comes at once is not lost.
    let mut term = {
        let _enter = rt.handle().enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("a SIGTERM handler")?
    };
    std::thread::spawn(move || {
        rt.wait(async {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        });
        then();
    });
    Ok(())
}
