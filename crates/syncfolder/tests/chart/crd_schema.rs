//! Validates a SyncFolder against the CRD's `openAPIV3Schema` the way
//! `kubectl apply` (strict field validation) would: types, enums, bounds and
//! required fields by a JSON Schema validator, unknown fields refused, and
//! the CRD's CEL rules (`x-kubernetes-validations`) evaluated by kube's CEL
//! validator.
//!
//! OpenAPI v3 as Kubernetes uses it is not JSON Schema: [`to_json_schema`]
//! translates the three differences that matter (`nullable`,
//! `x-kubernetes-int-or-string`, and that a structural schema knows every
//! field, which JSON Schema says with `additionalProperties: false`).

use serde_json::{Map, Value, json};
use syncfolder_testkit::chart::CHART_DIR;
use syncfolder_testkit::tools::project_root;

use crate::render::parse_documents;

/// The committed CRD's `openAPIV3Schema` for `v1alpha1`.
pub fn crd_openapi_schema() -> Value {
    let path = project_root()
        .join(CHART_DIR)
        .join("files/syncfolders.syncfolder.io.yaml");
    let yaml = std::fs::read_to_string(&path).expect("the CRD file");
    let crd = parse_documents(&yaml).remove(0);
    let version = crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|version| version["name"] == "v1alpha1")
        .expect("v1alpha1")
        .clone();
    version["schema"]["openAPIV3Schema"].clone()
}

/// Every reason the API server would refuse `object` as a SyncFolder.
pub fn refusals(object: &Value) -> Vec<String> {
    let openapi = crd_openapi_schema();
    let schema = with_object_envelope(to_json_schema(&openapi));
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the translated CRD schema is valid JSON Schema");
    let mut refusals: Vec<String> = validator
        .iter_errors(object)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect();
    if let Err(errors) = kube::core::cel::Validator::new().validate(&openapi, object, None) {
        refusals.extend(
            errors
                .iter()
                .map(|error| format!("CEL rule: {}", error.message)),
        );
    }
    refusals
}

/// OpenAPI v3 (Kubernetes structural schema) to JSON Schema.
pub fn to_json_schema(schema: &Value) -> Value {
    let Some(fields) = schema.as_object() else {
        return schema.clone();
    };
    let mut translated = Map::new();
    for (key, value) in fields {
        let value = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, property)| (name.clone(), to_json_schema(property)))
                    .collect(),
            ),
            "items" | "additionalProperties" if value.is_object() => to_json_schema(value),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(to_json_schema)
                    .collect(),
            ),
            // Kubernetes extensions and the keyword JSON Schema spells differently
            key if key.starts_with("x-kubernetes-") || key == "nullable" => continue,
            _ => value.clone(),
        };
        translated.insert(key.clone(), value);
    }
    let preserves_unknown = schema["x-kubernetes-preserve-unknown-fields"] == true;
    if translated.contains_key("properties")
        && !translated.contains_key("additionalProperties")
        && !preserves_unknown
    {
        translated.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
    if schema["x-kubernetes-int-or-string"] == true {
        translated.remove("type");
        translated.insert(
            "anyOf".to_owned(),
            json!([{"type": "integer"}, {"type": "string"}]),
        );
    }
    if schema["nullable"] == true {
        if let Some(Value::String(kind)) = translated.get("type").cloned() {
            translated.insert("type".to_owned(), json!([kind, "null"]));
        } else if let Some(any_of) = translated.get_mut("anyOf").and_then(Value::as_array_mut) {
            any_of.push(json!({"type": "null"}));
        }
    }
    Value::Object(translated)
}

/// The CRD schema describes `spec` and `status`; the API server adds the
/// envelope every object has.
fn with_object_envelope(mut schema: Value) -> Value {
    let properties = schema["properties"]
        .as_object_mut()
        .expect("the CRD schema has properties");
    properties.insert(
        "apiVersion".to_owned(),
        json!({"const": "syncfolder.io/v1alpha1"}),
    );
    properties.insert("kind".to_owned(), json!({"const": "SyncFolder"}));
    properties.insert(
        "metadata".to_owned(),
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }),
    );
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    let mut required: Vec<Value> = required;
    for field in ["apiVersion", "kind", "metadata"] {
        required.push(json!(field));
    }
    schema["required"] = Value::Array(required);
    schema
}
