//! The served OpenAPI document describes parameters and responses well enough for a generated
//! client: every parameter has a schema with a type (enums as enums, bounds on paging), every
//! operation has its success response and the error statuses its kind of request can get, in
//! the documented error body, and every field or parameter whose value is one of a fixed set is
//! an enum. The api crate declares these with `IntoParams` types (`routes::params`) and shared
//! error sets (`routes::responses`); this walks what clients download, so a route added with a
//! hand-written parameter, no `400` for its query, or a plain string for a status fails here.
//! Operation ids are unique (generated clients name their functions after them).

use std::collections::BTreeSet;

use serde_json::Value;
use sshq_tests::TestStack;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// Names whose values are always one of a fixed set, wherever they appear (a parameter or a
/// property of any schema): each must be an enum.
const ENUM_LIKE: [&str; 10] = [
    "status",
    "presence",
    "role",
    "type",
    "state",
    "order_by",
    "sort_by",
    "encoding",
    "format",
    "error_code",
];

struct Document<'a> {
    spec: &'a Value,
}

impl<'a> Document<'a> {
    /// `schema`, with a `$ref` followed to its component (panics on a dangling reference).
    fn resolve(&self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unexpected reference {reference}"));
                let target = &self.spec["components"]["schemas"][name];
                assert!(!target.is_null(), "dangling reference {reference}");
                self.resolve(target)
            }
            None => schema,
        }
    }

    /// Whether `schema` only admits the values of an enum (an `Option` is a `oneOf` of null and
    /// the enum; an array of enums counts too).
    fn is_enum(&self, schema: &'a Value) -> bool {
        let schema = self.resolve(schema);
        if schema.get("enum").is_some() {
            return true;
        }
        for key in ["oneOf", "anyOf", "allOf"] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                return options
                    .iter()
                    .all(|option| self.resolve(option)["type"] == "null" || self.is_enum(option));
            }
        }
        match schema.get("items") {
            Some(items) => self.is_enum(items),
            None => false,
        }
    }

    /// Whether `schema` says what values it takes: a type, an enum, or a composition of them.
    fn is_typed(&self, schema: &'a Value) -> bool {
        let schema = self.resolve(schema);
        schema.get("type").is_some()
            || schema.get("enum").is_some()
            || ["oneOf", "anyOf", "allOf"].iter().any(|key| {
                schema
                    .get(*key)
                    .and_then(Value::as_array)
                    .is_some_and(|options| options.iter().all(|o| self.is_typed(o)))
            })
    }

    fn operations(&self) -> Vec<(String, &'a Value)> {
        let mut operations = Vec::new();
        for (path, item) in self.spec["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(operation) = item.get(method) {
                    operations.push((format!("{} {path}", method.to_uppercase()), operation));
                }
            }
        }
        operations
    }

    /// Every property of every component schema, with its owner, recursing into inline
    /// objects.
    fn properties(&self) -> Vec<(String, &'a Value)> {
        fn walk<'v>(owner: &str, schema: &'v Value, out: &mut Vec<(String, &'v Value)>) {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    out.push((format!("{owner}.{name}"), property));
                    walk(&format!("{owner}.{name}"), property, out);
                }
            }
            for key in ["oneOf", "anyOf", "allOf"] {
                for option in schema
                    .get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    walk(owner, option, out);
                }
            }
            if let Some(items) = schema.get("items") {
                walk(owner, items, out);
            }
        }
        let mut out = Vec::new();
        for (name, schema) in self.spec["components"]["schemas"]
            .as_object()
            .expect("component schemas")
        {
            walk(name, schema, &mut out);
        }
        out
    }
}

fn statuses(operation: &Value) -> BTreeSet<String> {
    operation["responses"]
        .as_object()
        .expect("responses")
        .keys()
        .cloned()
        .collect()
}

/// Whether the operation needs a key: the document's default (`api_key`) unless it says
/// otherwise with an empty requirement.
fn secured(spec: &Value, operation: &Value) -> bool {
    let requirements = operation.get("security").unwrap_or(&spec["security"]);
    requirements.as_array().is_some_and(|r| {
        !r.is_empty()
            && r.iter()
                .all(|req| req.as_object().is_some_and(|o| !o.is_empty()))
    })
}

/// The broken rules of `spec`, one line each.
fn violations(spec: &Value) -> Vec<String> {
    let doc = Document { spec };
    let mut broken = Vec::new();
    let mut refs = Vec::new();
    collect_refs(spec, &mut refs);
    for reference in refs {
        let name = reference.trim_start_matches("#/components/schemas/");
        if spec["components"]["schemas"][name].is_null() {
            broken.push(format!("dangling reference {reference}"));
        }
    }
    let mut operation_ids = BTreeSet::new();
    for (operation_name, operation) in doc.operations() {
        // Generators name their functions after it; the specification wants it unique.
        match operation["operationId"].as_str() {
            Some(id) if operation_ids.insert(id.to_owned()) => {}
            other => broken.push(format!(
                "{operation_name}: operationId {other:?} missing or taken"
            )),
        }
        let statuses = statuses(operation);
        let mut needed: Vec<(&str, &str)> = Vec::new();
        let mut need = |status: &'static str, why: &'static str| needed.push((status, why));
        let parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let in_path = parameters.iter().any(|p| p["in"] == "path");
        let in_query = parameters.iter().any(|p| p["in"] == "query");
        let json_body = operation["requestBody"]["content"]["application/json"].is_object();
        if !statuses
            .iter()
            .any(|s| s.starts_with('2') || s.as_str() == "101")
        {
            broken.push(format!("{operation_name}: no success response"));
        }
        if secured(spec, operation) {
            need("401", "it takes an API key");
            need("429", "keys are rate limited");
            need("503", "it reads or writes NATS or Postgres");
        }
        if in_path {
            need("404", "it names a resource in its path");
        }
        if in_query || json_body {
            need("400", "it reads query parameters or a body");
        }
        if json_body {
            need("413", "it reads a body");
        }
        let path = operation_name.split_once(' ').unwrap().1;
        for template in path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            if !parameters
                .iter()
                .any(|p| p["in"] == "path" && p["name"] == template)
            {
                broken.push(format!(
                    "{operation_name}: path parameter {template} undescribed"
                ));
            }
        }
        for (status, why) in needed {
            if !statuses.contains(status) {
                broken.push(format!("{operation_name}: no {status} ({why})"));
            }
        }
        let mut names = BTreeSet::new();
        for parameter in &parameters {
            let name = format!(
                "{} {}",
                parameter["in"].as_str().unwrap_or("?"),
                parameter["name"].as_str().unwrap_or("?")
            );
            if !names.insert(name.clone()) {
                broken.push(format!("{operation_name}: {name} twice"));
            }
            match parameter.get("schema") {
                Some(schema) if doc.is_typed(schema) => {}
                _ => broken.push(format!("{operation_name}: {name} has no typed schema")),
            }
            if parameter["in"] != "header"
                && ENUM_LIKE.contains(&parameter["name"].as_str().unwrap_or_default())
                && !doc.is_enum(&parameter["schema"])
            {
                broken.push(format!("{operation_name}: {name} is not an enum"));
            }
            if ["page", "per_page"].contains(&parameter["name"].as_str().unwrap_or_default()) {
                let schema = doc.resolve(&parameter["schema"]);
                if schema.get("minimum").is_none() || schema.get("maximum").is_none() {
                    broken.push(format!("{operation_name}: {name} has no bounds"));
                }
            }
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let body = &response["content"]["application/json"]["schema"];
            if !body.is_object() {
                broken.push(format!("{operation_name}: {status} has no JSON error body"));
                continue;
            }
            if body["$ref"] == "#/components/schemas/Error"
                && status == "429"
                && response["headers"]["Retry-After"].is_null()
            {
                broken.push(format!("{operation_name}: 429 without Retry-After"));
            }
        }
    }
    for (name, property) in doc.properties() {
        let field = name.rsplit('.').next().unwrap();
        if ENUM_LIKE.contains(&field) && !doc.is_enum(property) {
            broken.push(format!("{name} is not an enum"));
        }
    }
    broken
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => out.push(reference.clone()),
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_types_every_parameter_and_response_and_spells_enums_as_enums() {
    let stack = TestStack::start().await;
    let spec: Value = reqwest::get(stack.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let broken = violations(&spec);
    assert!(
        broken.is_empty(),
        "the document breaks its rules:\n{}",
        broken.join("\n")
    );

    // The rules catch what they are for: a copy of the document with a query parameter left
    // untyped, a status spelled as a plain string and a list's 400 dropped breaks all three.
    let mut spoiled = spec.clone();
    let jobs = &mut spoiled["paths"]["/v1/jobs"]["get"];
    let parameters = jobs["parameters"].as_array_mut().unwrap();
    let status = parameters
        .iter()
        .position(|p| p["name"] == "status")
        .unwrap();
    parameters[status]["schema"] = serde_json::json!({});
    jobs["responses"].as_object_mut().unwrap().remove("400");
    spoiled["components"]["schemas"]["Job"]["properties"]["status"] =
        serde_json::json!({ "type": "string" });
    let broken = violations(&spoiled);
    for expected in [
        "GET /v1/jobs: query status has no typed schema",
        "GET /v1/jobs: query status is not an enum",
        "GET /v1/jobs: no 400",
        "Job.status is not an enum",
    ] {
        assert!(
            broken.iter().any(|b| b.starts_with(expected)),
            "{expected:?} not found in {broken:#?}"
        );
    }
}
