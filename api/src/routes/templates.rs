//! `/v1/templates`: the commands this deployment allows, as Scalelite's API lists them, plus
//! the tenant's own templates, which its owner adds and removes.
//!
//! A tenant's template is a registry event on its own subject (`TemplateAdded`, then maybe
//! `TemplateRemoved`); adding and removing publish with "expected last subject sequence", so
//! two owners racing for one name cannot both win. The name must be unique within the built-in
//! set and the tenant's own, so a request by name and the audit trail always mean one template.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use schemas::{AppendErrorKind, Expectation};
use schemas::{Event, EventBody, TemplateAdded, TemplateDefined, TemplateRemoved};

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorCode};
use crate::json::JsonBody;
use crate::policy::{CommandPolicy, Extras, Origin, Template, syntax};
use crate::routes::params::TemplatePath;
use crate::routes::responses::{Common, Conflict, Forbidden, Invalid, NotFound, TooLarge};

#[derive(Serialize, utoipa::ToSchema)]
pub struct Templates {
    /// `templates`: only these run. `open`: any command passing the blocked patterns.
    pub mode: CommandPolicy,
    /// The built-in templates, then the caller's tenant's own (`origin` says which).
    pub templates: Vec<Template>,
}

/// A template of the tenant's own.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    /// 1 to 64 lower-case letters, digits and `_`, starting with a letter; unique within the
    /// built-in templates and the tenant's.
    pub name: String,
    /// The template syntax: fixed words, `{name:kind}` parameters (kinds `container`,
    /// `service`, `host`, `count`) and optional `[--flag {name:kind}]` pairs, e.g.
    /// `tail -n {lines:count} {unit:service}`. The program is a fixed word and no blocked
    /// pattern.
    pub template: String,
    #[serde(default)]
    pub description: String,
    /// Environment variables a call may set, by name (never the dangerous ones).
    #[serde(default)]
    pub env: Vec<String>,
    /// A call may ask for a pseudo-terminal.
    #[serde(default)]
    pub pty: bool,
    /// A call may send standard input.
    #[serde(default)]
    pub stdin: bool,
    /// The output may hold secrets: live output goes to `<p>.sec.…` instead of `<p>.out.…`,
    /// and job views show it only to owners and administrators (others get
    /// `output_redacted: true`).
    #[serde(default)]
    pub sensitive: bool,
}

#[utoipa::path(get, path = "/v1/templates", operation_id = "list_templates", tag = "exec", responses((status = 200, body = Templates), Common))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Templates>, ApiError> {
    caller.require(Scope::Read)?;
    let policy = state.policy_for(&caller.tenant).await?;
    Ok(Json(Templates {
        mode: policy.mode,
        templates: policy.templates.clone(),
    }))
}

#[utoipa::path(post, path = "/v1/templates", operation_id = "add_template", tag = "exec", request_body = NewTemplate, responses((status = 201, description = "Added: the tenant's callers may run it", body = Template), Common, Forbidden, Invalid, Conflict, TooLarge, (status = 400, description = "Invalid template; `property` names what is wrong", body = ApiError), (status = 403, description = "Only an owner may add templates", body = ApiError), (status = 409, description = "The name is taken (a built-in or one of the tenant's)", body = ApiError)))]
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant))]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewTemplate>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Templates)?;
    let template = Template::define(
        &body.name,
        &body.template,
        &body.description,
        Extras {
            env: body.env.clone(),
            pty: body.pty,
            stdin: body.stdin,
            sensitive: body.sensitive,
        },
        Origin::Tenant,
    )
    .map_err(|e| ApiError::invalid(ErrorCode::ValueIncorrectFormat, &e.property, e.reason))?;
    let name = body.name.clone();
    let taken = || {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ValueDuplicate,
            format!("a template named {name} exists already"),
        )
        .property("name")
    };
    if state.policy.templates.iter().any(|t| t.name == body.name) {
        return Err(taken());
    }
    let subject = state.topology.template_subject(&caller.tenant, &body.name);
    let expected = match state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?
    {
        Some((_, event)) if is_definition(&event.body) => {
            return Err(taken());
        }
        Some((seq, _)) => seq,
        None => 0,
    };
    let definition = TemplateAdded {
        name: body.name,
        template: body.template,
        description: body.description,
        env: body.env,
        pty: body.pty,
        stdin: body.stdin,
    };
    // A template that is not sensitive keeps the older event, which every release reads.
    let body = if body.sensitive {
        EventBody::TemplateDefined(TemplateDefined {
            definition,
            sensitive: true,
        })
    } else {
        EventBody::TemplateAdded(definition)
    };
    let event = Event::new(caller.tenant.clone(), Some(caller.key.clone()), body);
    match state
        .topology
        .append(&state.js, &event, Expectation::LastSequence(expected))
        .await
    {
        Ok(_) => {}
        Err(e) if e.kind() == AppendErrorKind::Conflict => return Err(taken()),
        Err(e) => return Err(ApiError::log_unavailable(e)),
    }
    // This process answers the owner's next request with the new set at once; the others
    // hear of it through the template notices.
    state.tenant_templates.invalidate(caller.tenant.as_str());
    Ok((StatusCode::CREATED, Json(template)))
}

#[utoipa::path(delete, path = "/v1/templates/{name}", operation_id = "remove_template", tag = "exec", params(TemplatePath), responses((status = 204, description = "Removed: it no longer runs"), Common, Forbidden, NotFound, (status = 403, description = "Only an owner may remove templates, and built-in templates cannot be removed", body = ApiError)))]
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(TemplatePath { name }): Path<TemplatePath>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Templates)?;
    if state.policy.templates.iter().any(|t| t.name == name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            format!("{name} is a built-in template; built-in templates cannot be removed"),
        )
        .property("name"));
    }
    // A name that is no valid template name was never added (and is no subject token).
    if syntax::check_name(&name).is_err() {
        return Err(ApiError::not_found("template"));
    }
    let subject = state.topology.template_subject(&caller.tenant, &name);
    let seq = match state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?
    {
        Some((seq, event)) if is_definition(&event.body) => seq,
        _ => return Err(ApiError::not_found("template")),
    };
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::TemplateRemoved(TemplateRemoved { name }),
    );
    match state
        .topology
        .append(&state.js, &event, Expectation::LastSequence(seq))
        .await
    {
        Ok(_) => {}
        // Someone removed (or removed and re-added) it meanwhile: the template is not the one
        // this call meant to remove; say so rather than remove the new one.
        Err(e) if e.kind() == AppendErrorKind::Conflict => {
            return Err(ApiError::not_found("template"));
        }
        Err(e) => return Err(ApiError::log_unavailable(e)),
    }
    state.tenant_templates.invalidate(caller.tenant.as_str());
    Ok(StatusCode::NO_CONTENT)
}

/// Whether the last event on a template's subject defines it (rather than removed it).
fn is_definition(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::TemplateAdded(_) | EventBody::TemplateDefined(_)
    )
}
