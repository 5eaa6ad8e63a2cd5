//! `syncfolder controller`: flags to [`syncfolder_controller::process`].

use std::time::Duration;

use anyhow::Context;
use syncfolder_controller::ca::Lifetimes;
use syncfolder_controller::certificate::service_dns_names;
use syncfolder_controller::controller::{CaBundleCopies, ControllerSettings};
use syncfolder_controller::pki::ServingSecret;
use syncfolder_controller::process::{CertificateSource, PkiConfig, ProcessConfig, WebhookConfig};

use crate::cli::ControllerArgs;
use crate::commands::kubernetes::inject_settings;

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    if let Some(ca_cert) = &args.ca_cert {
        // a bad CA file stops the controller now, not at every reconcile
        syncfolder_client::Client::with_ca_cert(&args.server, &args.admin_token, Some(ca_cert))
            .context("the sync server's CA certificate (--ca-cert)")?;
    }
    let pod_name = args
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("syncfolder-controller-{}", std::process::id()));
    let webhook = args.webhook_listen.map(|listen| WebhookConfig {
        listen,
        certificate: match (&args.webhook_cert, &args.webhook_key) {
            (Some(cert), Some(key)) => CertificateSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => CertificateSource::Managed {
                secret: args.webhook_secret.clone(),
                service: args.webhook_service.clone(),
                configuration: args.webhook_configuration.clone(),
            },
        },
        inject: inject_settings(&args.sidecar),
    });
    if args.ca_renew_before >= args.ca_validity {
        anyhow::bail!(
            "--ca-renew-before ({:?}) must be shorter than --ca-validity ({:?})",
            args.ca_renew_before,
            args.ca_validity
        );
    }
    // the sidecars get the bundle when the controller's CA signs the server's certificate
    let ca_bundle = args.server_tls_service.is_some().then(|| CaBundleCopies {
        config_map: args.ca_bundle_config_map.clone(),
        bundle: syncfolder_controller::trust::TrustBundle::default(),
    });
    let pki = PkiConfig {
        ca_secret: args.ca_secret,
        server: args
            .server_tls_secret
            .zip(args.server_tls_service)
            .map(|(secret, service)| ServingSecret {
                secret,
                dns_names: service_dns_names(&service, &args.namespace),
            }),
        lifetimes: Lifetimes {
            ca_validity: args.ca_validity,
            ca_renew_before: args.ca_renew_before,
            certificate_validity: args.certificate_validity,
            propagation: args.trust_propagation,
        },
    };
    let config = ProcessConfig {
        controller: ControllerSettings {
            default_server_url: args.server,
            admin_token: args.admin_token,
            status_refresh: Duration::from_secs(args.status_refresh_seconds.max(1)),
            retry_after: Duration::from_secs(30),
            instance: Some(pod_name.clone()),
            ca_bundle,
        },
        metrics_listen: args.metrics_listen,
        webhook,
        namespace: args.namespace,
        pod_name,
        leader_election_lease: args.leader_election_lease,
        server_ca_cert: args.ca_cert,
        pki,
    };
    syncfolder_controller::process::run_process(config, super::shutdown_signal()).await?;
    Ok(())
}
