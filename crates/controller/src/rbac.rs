//! Test support: does the chart's RBAC allow a request? Every request the
//! mocked API server receives in this crate's tests goes through
//! [`assert_allowed_by_rbac`], so a controller change that needs a new
//! permission fails a test until the chart grants it.
//!
//! The rules come from `manifests/syncfolder.yaml` (the chart rendered with
//! its defaults; a test in the chart's suite keeps it current): the
//! ClusterRoles and the Roles bound to the controller's ServiceAccount.

use std::sync::OnceLock;

use http::Method;
use serde::Deserialize;

/// The rendered chart, relative to this crate.
const MANIFESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../manifests/syncfolder.yaml"
);

#[derive(Debug, Clone, Deserialize)]
struct Object {
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// A rule set and where it applies: everywhere, or in one namespace.
#[derive(Debug, Clone)]
struct Grant {
    namespace: Option<String>,
    rules: Vec<Rule>,
}

/// An API request in RBAC's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub api_group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// Reads a request the way the API server's authorizer does.
pub fn attributes(method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => panic!("not a Kubernetes API path: {path}"),
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
            (Some((*namespace).to_owned()), rest)
        }
        rest => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => ((*resource).to_owned(), None),
        [resource, name] => ((*resource).to_owned(), Some((*name).to_owned())),
        [resource, name, subresource] => (
            format!("{resource}/{subresource}"),
            Some((*name).to_owned()),
        ),
        _ => panic!("cannot read {path}"),
    };
    let watch = query.is_some_and(|query| query.split('&').any(|pair| pair == "watch=true"));
    let verb = match (method.as_str(), &name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if watch => "watch",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        (other, _) => panic!("unexpected method {other}"),
    };
    Attributes {
        verb: verb.to_owned(),
        api_group,
        resource,
        namespace,
        name,
    }
}

fn grants_in(manifests: &str) -> Vec<Grant> {
    serde_yaml::Deserializer::from_str(manifests)
        .filter_map(|document| Option::<Object>::deserialize(document).ok().flatten())
        .filter_map(|object| match object.kind.as_str() {
            "ClusterRole" => Some(Grant {
                namespace: None,
                rules: object.rules,
            }),
            "Role" => Some(Grant {
                namespace: object.metadata.namespace,
                rules: object.rules,
            }),
            _ => None,
        })
        .collect()
}

fn matches(allowed: &[String], value: &str) -> bool {
    allowed
        .iter()
        .any(|allowed| allowed == "*" || allowed == value)
}

fn allows(grant: &Grant, request: &Attributes) -> bool {
    if grant.namespace.is_some() && grant.namespace != request.namespace {
        return false;
    }
    grant.rules.iter().any(|rule| {
        matches(&rule.api_groups, &request.api_group)
            && matches(&rule.resources, &request.resource)
            && matches(&rule.verbs, &request.verb)
            && (rule.resource_names.is_empty()
                || request
                    .name
                    .as_deref()
                    .is_some_and(|name| rule.resource_names.iter().any(|allowed| allowed == name)))
    })
}

/// The controller's grants from the rendered chart. The chart's namespaced
/// Role lives in `syncfolder-system`; the tests run the controller there.
fn chart_grants() -> &'static [Grant] {
    static GRANTS: OnceLock<Vec<Grant>> = OnceLock::new();
    GRANTS.get_or_init(|| {
        let manifests = std::fs::read_to_string(MANIFESTS)
            .unwrap_or_else(|err| panic!("cannot read {MANIFESTS}: {err}"));
        let grants = grants_in(&manifests);
        assert!(!grants.is_empty(), "{MANIFESTS} has no ClusterRole or Role");
        grants
    })
}

/// Panics unless the chart's RBAC lets the controller make this request.
pub fn assert_allowed_by_rbac(method: &Method, path: &str, query: Option<&str>) {
    let request = attributes(method, path, query);
    assert!(
        chart_grants().iter().any(|grant| allows(grant, &request)),
        "the chart's RBAC does not allow {method} {path}: {request:?}; grant it in charts/syncfolder/templates"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
kind: ServiceAccount
metadata: {name: syncfolder-controller, namespace: syncfolder-system}
---
kind: ClusterRole
metadata: {name: syncfolder-controller}
rules:
- apiGroups: [syncfolder.io]
  resources: [syncfolders]
  verbs: [get, list, watch, patch]
- apiGroups: [syncfolder.io]
  resources: [syncfolders/status]
  verbs: [patch]
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations]
  verbs: [get, patch]
  resourceNames: [syncfolder-sidecar-injector]
---
kind: Role
metadata: {name: syncfolder-leader-election, namespace: syncfolder-system}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
"#;

    fn allowed(method: Method, path: &str, query: Option<&str>) -> bool {
        let request = attributes(&method, path, query);
        grants_in(RULES).iter().any(|grant| allows(grant, &request))
    }

    #[test]
    fn requests_read_as_the_api_server_reads_them() {
        assert_eq!(
            attributes(
                &Method::GET,
                "/apis/syncfolder.io/v1alpha1/syncfolders",
                Some("watch=true&timeoutSeconds=290")
            ),
            Attributes {
                verb: "watch".to_owned(),
                api_group: "syncfolder.io".to_owned(),
                resource: "syncfolders".to_owned(),
                namespace: None,
                name: None,
            }
        );
        assert_eq!(
            attributes(
                &Method::PATCH,
                "/apis/syncfolder.io/v1alpha1/namespaces/a/syncfolders/p/status",
                None
            ),
            Attributes {
                verb: "patch".to_owned(),
                api_group: "syncfolder.io".to_owned(),
                resource: "syncfolders/status".to_owned(),
                namespace: Some("a".to_owned()),
                name: Some("p".to_owned()),
            }
        );
        assert_eq!(
            attributes(&Method::GET, "/api/v1/namespaces/a/secrets", None).verb,
            "list"
        );
        assert_eq!(
            attributes(&Method::GET, "/api/v1/namespaces/a/secrets/s", None).resource,
            "secrets"
        );
    }

    #[test]
    fn rules_allow_exactly_their_verbs_resources_names_and_namespaces() {
        assert!(allowed(
            Method::GET,
            "/apis/syncfolder.io/v1alpha1/syncfolders",
            Some("watch=true")
        ));
        assert!(allowed(
            Method::PATCH,
            "/apis/syncfolder.io/v1alpha1/namespaces/a/syncfolders/p/status",
            None
        ));
        assert!(!allowed(
            Method::PUT,
            "/apis/syncfolder.io/v1alpha1/namespaces/a/syncfolders/p/status",
            None
        ));
        assert!(!allowed(
            Method::DELETE,
            "/apis/syncfolder.io/v1alpha1/namespaces/a/syncfolders/p",
            None
        ));
        assert!(allowed(
            Method::PATCH,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/syncfolder-sidecar-injector",
            None
        ));
        assert!(!allowed(
            Method::PATCH,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/someone-elses",
            None
        ));
        assert!(allowed(
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/syncfolder-system/leases",
            None
        ));
        assert!(!allowed(
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
            None
        ));
        assert!(!allowed(
            Method::GET,
            "/api/v1/namespaces/a/secrets/s",
            None
        ));
    }
}
