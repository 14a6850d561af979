//! The account routes that read: `GET /users/me` and, for admins and support staff, `GET
//! /users/{user_id}`. A profile comes from the users read model, whose personal values are
//! sealed; they are opened here with the person's key, and show as erased (`null`, with
//! `erased: true`) once the key is gone.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http_common::openapi::DocumentedRouter;
use http_common::params::{count_param, known_params, truncate};
use http_common::{Problem, RequestContext};
use identity::profile::SealedProfile;
use projections::users::{UserRow, UsersProjection, list_user_rows, load_user_row};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{QueryState, read, wait_for};

/// The account routes that read, added to the query routes.
pub(crate) fn routes(router: DocumentedRouter<QueryState>) -> DocumentedRouter<QueryState> {
    router
        .route(
            read(
                "/users/me",
                "Your own profile (an account's)",
                "Profile",
                &[],
            ),
            own_profile,
        )
        .route(
            read(
                "/users",
                "The accounts, newest first, with their profiles (admins). Any other query parameter is a 400 naming the accepted ones",
                "Accounts",
                &[
                    ("kind", "customer or staff"),
                    ("limit", "1 to 100, default 25"),
                    ("offset", "0 to 10000, default 0"),
                ],
            ),
            accounts,
        )
        .route(
            read(
                "/users/{user_id}",
                "An account's profile (admins and support staff)",
                "Profile",
                &[],
            ),
            profile,
        )
}

/// The schema of a profile.
pub(crate) fn profile_schema() -> Value {
    let text_or_null = json!({ "type": ["string", "null"] });
    json!({ "type": "object", "properties": {
        "user_id": { "type": "string", "format": "uuid" },
        "kind": { "enum": ["customer", "staff"] },
        "roles": { "type": "array", "items": { "enum": ["catalog", "support", "admin", "auditor"] } },
        "status": { "enum": ["active", "deactivated", "erased"] },
        "email_verified": { "type": "boolean" },
        "email": text_or_null.clone(), "name": text_or_null.clone(), "phone": text_or_null,
        "addresses": { "type": ["array", "null"], "items": { "type": "object" } },
        "language": { "type": "string", "description": "the language of the person's messages (ISO 639-1); en unless one was chosen" },
        "erased": { "type": "boolean", "description": "the person's data was erased: every personal field is null for good" },
        "created_at": { "type": "string", "format": "date-time" },
        "updated_at": { "type": "string", "format": "date-time" },
        "last_login_at": { "type": ["string", "null"], "format": "date-time" },
        "version": { "type": "integer" } } })
}

async fn profile_answer(state: &QueryState, row: &UserRow) -> Result<Response, Problem> {
    Ok(Json(profile_json(state, row).await?).into_response())
}

/// The profile of `row`, its personal values opened with the person's key.
async fn profile_json(state: &QueryState, row: &UserRow) -> Result<Value, Problem> {
    let sealed = SealedProfile {
        email: row.email.clone(),
        name: row.name.clone(),
        phone: row.phone.clone(),
        addresses: row.addresses.clone(),
    };
    let opened = state
        .identity
        .person_keys
        .open_profile(&row.user_id, &sealed)
        .await
        .map_err(|error| {
            Problem::unavailable_logged("profiles cannot be read right now", &error)
        })?;
    let roles: Vec<&str> = row
        .roles
        .split(',')
        .filter(|role| !role.is_empty())
        .collect();
    Ok(json!({
        "user_id": row.user_id,
        "kind": row.kind,
        "roles": roles,
        "status": row.status,
        "email_verified": row.email_verified,
        "email": opened.email,
        "name": opened.name,
        "phone": opened.phone,
        "addresses": opened.addresses,
        "language": row.language.as_deref().unwrap_or("en"),
        "erased": opened.erased || row.status == "erased",
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_login_at": row.last_login_at,
        "version": row.version,
    }))
}

async fn profile_of(
    state: &QueryState,
    user_id: &str,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Response, Problem> {
    wait_for(state, UsersProjection::NAME, headers, params).await?;
    let row = load_user_row(state.queries.db(), user_id)
        .await
        .map_err(|error| crate::db_problem(&error))?
        .ok_or_else(|| Problem::not_found(format!("no account has id {user_id}")))?;
    profile_answer(state, &row).await
}

#[tracing::instrument(skip_all)]
async fn own_profile(
    State(state): State<QueryState>,
    Extension(context): Extension<RequestContext>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let Some(user_id) = context.principal.user_id() else {
        return Err(Problem::not_found(
            "these credentials have no account (an API key has no profile)",
        ));
    };
    profile_of(&state, &user_id.to_string(), &headers, &params).await
}

#[tracing::instrument(skip_all, fields(user_id = %user_id))]
async fn profile(
    State(state): State<QueryState>,
    Path(user_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let user_id = Uuid::parse_str(&user_id).map_err(|_| {
        Problem::not_found(format!(
            "no account has id {:?}: user ids are UUIDs",
            truncate(&user_id, 80)
        ))
    })?;
    profile_of(&state, &user_id.to_string(), &headers, &params).await
}

/// How deep the accounts may be paged.
const ACCOUNTS_OFFSET_MAX: usize = 10_000;

#[tracing::instrument(skip_all)]
async fn accounts(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    known_params(&params, &["kind", "limit", "offset", "min_position"])?;
    let kind = match params.get("kind").map(|kind| kind.trim()) {
        None | Some("") => None,
        Some(kind @ ("customer" | "staff")) => Some(kind),
        Some(other) => {
            return Err(Problem::invalid(
                "kind",
                format!("{:?} is neither customer nor staff", truncate(other, 40)),
            ));
        }
    };
    let limit = count_param(&params, "limit", 25, 1..=100)?;
    let offset = count_param(&params, "offset", 0, 0..=ACCOUNTS_OFFSET_MAX)?;
    wait_for(&state, UsersProjection::NAME, &headers, &params).await?;
    let rows = list_user_rows(state.queries.db(), kind, offset, limit)
        .await
        .map_err(|error| crate::db_problem(&error))?;
    let mut accounts = Vec::with_capacity(rows.len());
    for row in &rows {
        accounts.push(profile_json(&state, row).await?);
    }
    let next_offset =
        Some(offset + limit).filter(|next| rows.len() == limit && *next <= ACCOUNTS_OFFSET_MAX);
    Ok(Json(json!({ "accounts": accounts, "next_offset": next_offset })).into_response())
}
