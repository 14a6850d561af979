//! The account routes that change something: registration, email verification, sessions (log
//! in, refresh, log out), the profile, the password and its reset, deactivation and erasure.
//! Each handler extracts its input, calls one function of `identity::Accounts` and maps the
//! answer.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use domain::UserError;
use http_common::access::unauthenticated;
use http_common::problem::{field_problem, store_problem};
use http_common::{JsonBody, Problem, RequestContext};
use identity::accounts::Written;
use identity::sessions::RefreshError;
use identity::{AccountError, IdentityError, ProfileInput, Session};
use serde_json::json;
use uuid::Uuid;

use crate::CommandState;
use crate::handlers::{metadata, written};
use crate::input::{
    ChangePassword, ChangeProfile, CompleteReset, Login, Refresh, Register, RequestReset,
    VerifyEmail,
};

/// The answer for a refused or failed account operation.
fn account_problem(error: AccountError) -> Response {
    match error {
        AccountError::Invalid(field) => field_problem(&field).into_response(),
        AccountError::EmailTaken => Problem::conflict(error.to_string())
            .with_field("email")
            .into_response(),
        AccountError::InvalidCredentials => unauthenticated(
            "the email or the password is wrong (or the account cannot log in)",
            None,
        ),
        AccountError::Throttled(wait) => {
            let seconds = wait.as_secs().max(1);
            let mut response = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                format!("too many failed attempts: try again in {seconds} s"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        AccountError::Refresh(refused) => unauthenticated(
            match refused {
                RefreshError::Reused => {
                    "the refresh token was used already, so its session was ended: log in again"
                        .to_owned()
                }
                other => format!("{other}: log in again"),
            },
            Some("invalid_token"),
        ),
        AccountError::Token(refused) => Problem::invalid(
            "token",
            format!("{refused}: ask for a new one"),
        )
        .into_response(),
        AccountError::WrongPassword => {
            Problem::invalid("current_password", "does not match the account's password")
                .into_response()
        }
        AccountError::NotFound => Problem::not_found(
            "no account has this id (an account of an outside identity provider has no profile here)",
        )
        .into_response(),
        AccountError::Refused(refused) => match refused {
            UserError::NotFound => Problem::not_found("no account has this id").into_response(),
            UserError::EmptyChange => {
                Problem::invalid("body", refused.to_string()).into_response()
            }
            UserError::RolesDoNotFitKind => {
                Problem::invalid("roles", refused.to_string()).into_response()
            }
            UserError::AlreadyExists | UserError::Deactivated | UserError::Erased => {
                Problem::conflict(refused.to_string()).into_response()
            }
        },
        AccountError::Failed(IdentityError::Store(error)) => store_problem(&error).into_response(),
        // The secret store is a dependency like the event store: down is a 503 to retry.
        AccountError::Failed(IdentityError::Storage(error)) => {
            Problem::unavailable_logged("accounts cannot be served right now", &error)
                .into_response()
        }
        AccountError::Failed(IdentityError::Invalid(field)) => {
            field_problem(&field).into_response()
        }
        AccountError::Failed(error) => Problem::internal(&error).into_response(),
    }
}

/// A refused or failed account request, answered as [`account_problem`] says (boxed: an answer
/// is large, and handlers return it through `?`).
#[derive(Debug)]
pub(crate) struct Refused(Box<Response>);

impl From<AccountError> for Refused {
    fn from(error: AccountError) -> Self {
        Refused(Box::new(account_problem(error)))
    }
}

impl From<Problem> for Refused {
    fn from(problem: Problem) -> Self {
        Refused(Box::new(problem.into_response()))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

type Answer = Result<Response, Refused>;

/// `{user_id, position}` with `X-Event-Position`.
fn user_written(status: StatusCode, written_user: &Written) -> Response {
    written(
        status,
        "user_id",
        &written_user.user_id.to_string(),
        written_user.position,
    )
}

/// 204, with `X-Event-Position` when an event was appended.
fn no_content(position: Option<u64>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(position) = position
        && let Ok(value) = HeaderValue::from_str(&position.to_string())
    {
        response.headers_mut().insert("x-event-position", value);
    }
    response
}

fn session_json(session: &Session) -> Response {
    let mut response = Json(json!({
        "access_token": session.access_token,
        "token_type": "Bearer",
        "expires_in": session.expires_in,
        "refresh_token": session.refresh_token,
        "user_id": session.user_id,
    }))
    .into_response();
    // Tokens are never cached by anything between the shop and its client.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The account of the caller: its user id, or 404 for a principal without one.
fn own_account(context: &RequestContext) -> Result<Uuid, Problem> {
    context.principal.user_id().ok_or_else(|| {
        Problem::not_found("these credentials have no account (an API key has no profile)")
    })
}

/// An account's id in a path.
fn user_id_of(text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text).map_err(|_| {
        Problem::not_found(format!(
            "no account has id {:?}: user ids are UUIDs",
            http_common::params::truncate(text, 80)
        ))
    })
}

/// Refuses an email of a login or reset request that cannot be an address: longer than any.
fn check_email_length(email: &str) -> Result<(), Problem> {
    if email.chars().count() > domain::personal::EMAIL_MAX_CHARS {
        return Err(Problem::invalid(
            "email",
            format!(
                "must be at most {} characters (no email address is longer)",
                domain::personal::EMAIL_MAX_CHARS
            ),
        ));
    }
    Ok(())
}

#[tracing::instrument(skip_all)]
pub(crate) async fn register(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<Register>,
) -> Answer {
    let registered = state
        .identity
        .accounts
        .register(
            &body.email,
            &body.password,
            &body.name,
            domain::AccountKind::Customer,
            &Default::default(),
            &metadata(&context),
        )
        .await?;
    Ok(user_written(StatusCode::CREATED, &registered))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn verify_email(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<VerifyEmail>,
) -> Answer {
    let verified = state
        .identity
        .accounts
        .verify_email(&body.token, &metadata(&context))
        .await?;
    Ok(no_content(verified.position))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn log_in(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<Login>,
) -> Answer {
    check_email_length(&body.email)?;
    let session = state
        .identity
        .accounts
        .login(
            &body.email,
            &body.password,
            context.peer,
            &metadata(&context),
        )
        .await?;
    Ok(session_json(&session))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn refresh(
    State(state): State<CommandState>,
    JsonBody(body): JsonBody<Refresh>,
) -> Answer {
    let session = state.identity.accounts.refresh(&body.refresh_token).await?;
    Ok(session_json(&session))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn log_out(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
) -> Answer {
    let session_id = context.session_id.as_deref().ok_or_else(|| {
        Problem::invalid(
            "Authorization",
            "only an access token from POST /sessions belongs to a session",
        )
    })?;
    state.identity.accounts.logout(session_id).await?;
    Ok(no_content(None))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn change_profile(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<ChangeProfile>,
) -> Answer {
    let input = ProfileInput {
        name: body.name,
        phone: body.phone,
        addresses: body.addresses,
        language: body.language,
    };
    let changed = state
        .identity
        .accounts
        .change_profile(own_account(&context)?, input, &metadata(&context))
        .await?;
    Ok(user_written(StatusCode::OK, &changed))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn change_password(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<ChangePassword>,
) -> Answer {
    let changed = state
        .identity
        .accounts
        .change_password(
            own_account(&context)?,
            &body.current_password,
            &body.new_password,
            &metadata(&context),
        )
        .await?;
    Ok(no_content(changed.position))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn request_password_reset(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<RequestReset>,
) -> Answer {
    check_email_length(&body.email)?;
    state
        .identity
        .accounts
        .request_password_reset(&body.email, metadata(&context));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "detail": "if an account has this email, a message with a reset code is on its way" })),
    )
        .into_response())
}

#[tracing::instrument(skip_all)]
pub(crate) async fn complete_password_reset(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    JsonBody(body): JsonBody<CompleteReset>,
) -> Answer {
    let reset = state
        .identity
        .accounts
        .complete_password_reset(&body.token, &body.new_password, &metadata(&context))
        .await?;
    Ok(no_content(reset.position))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn erase_own_account(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
) -> Answer {
    let erased = state
        .identity
        .accounts
        .erase(own_account(&context)?, &metadata(&context))
        .await?;
    Ok(user_written(StatusCode::ACCEPTED, &erased))
}

#[tracing::instrument(skip_all, fields(user_id = %user_id))]
pub(crate) async fn erase_account(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(user_id): Path<String>,
) -> Answer {
    let erased = state
        .identity
        .accounts
        .erase(user_id_of(&user_id)?, &metadata(&context))
        .await?;
    Ok(user_written(StatusCode::ACCEPTED, &erased))
}

#[tracing::instrument(skip_all, fields(user_id = %user_id))]
pub(crate) async fn deactivate_account(
    State(state): State<CommandState>,
    Extension(context): Extension<RequestContext>,
    Path(user_id): Path<String>,
) -> Answer {
    let deactivated = state
        .identity
        .accounts
        .deactivate(user_id_of(&user_id)?, &metadata(&context))
        .await?;
    Ok(user_written(StatusCode::OK, &deactivated))
}
