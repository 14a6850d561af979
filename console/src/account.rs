//! Accounts: register, log in and out, confirm an email address, reset a password.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde_json::json;

use crate::ConsoleState;
use crate::api::Call;
use crate::pages::{Form, Visit, failure, message, page, param, redirect};

/// Where to go after logging in: a page of this console (`next`), or the home page. Anything
/// else (another site, `//host`) is ignored.
fn next_page(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic());
    if local { next } else { "/" }
}

/// `/account/login`.
pub async fn login_page(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let next = next_page(params.get("next").map_or("/", String::as_str));
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "login.html",
        context! { next => next, email => "", error => None::<String> },
    )
}

/// `POST /account/login`: a session from the API, kept in the session cookie.
pub async fn log_in(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let next = next_page(form.text("next")).to_owned();
    let email = form.text("email").to_owned();
    let answer = visitor
        .call(
            &state.api,
            Call::post(
                "/sessions",
                json!({ "email": email, "password": form.raw("password") }),
            ),
        )
        .await;
    if answer.ok() && visitor.log_in(&answer.body) {
        // A guest's cart stays the guest's: the account starts its own.
        return redirect(&visitor, &next);
    }
    if !answer.status.is_client_error() {
        return failure(&state, &visitor, &answer, "You cannot log in right now");
    }
    page(
        &state,
        &visitor,
        answer.status,
        "login.html",
        context! { next => next, email => email, error => answer.problem() },
    )
}

/// `POST /account/logout`: the API ends the session; the cookie goes.
pub async fn log_out(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    if visitor.session.is_some() {
        let _ = visitor
            .call(&state.api, Call::delete("/sessions/current"))
            .await;
    }
    visitor.log_out();
    redirect(&visitor, "/")
}

/// `/account/register`.
pub async fn register_page(State(state): State<ConsoleState>, Visit(visitor): Visit) -> Response {
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "register.html",
        context! { name => "", email => "", error => None::<String> },
    )
}

/// `POST /account/register`: the account, then a session for it.
pub async fn register(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let (name, email, password) = (form.text("name"), form.text("email"), form.raw("password"));
    let error = if password != form.raw("password_again") {
        Some((
            StatusCode::UNPROCESSABLE_ENTITY,
            "The two passwords differ; type the same one twice.".to_owned(),
        ))
    } else {
        let answer = visitor
            .call(
                &state.api,
                Call::post(
                    "/users",
                    json!({ "name": name, "email": email, "password": password }),
                ),
            )
            .await;
        if answer.ok() {
            let session = visitor
                .call(
                    &state.api,
                    Call::post("/sessions", json!({ "email": email, "password": password })),
                )
                .await;
            if session.ok() && visitor.log_in(&session.body) {
                return redirect(&visitor, "/");
            }
            return redirect(&visitor, "/account/login");
        }
        if !answer.status.is_client_error() {
            return failure(&state, &visitor, &answer, "You cannot register right now");
        }
        Some((answer.status, answer.problem()))
    };
    let (status, error) = error.unwrap_or((StatusCode::OK, String::new()));
    page(
        &state,
        &visitor,
        status,
        "register.html",
        context! { name => name, email => email, error => error },
    )
}

/// `POST /account/reset`: asks for a reset link (the same answer whether or not the address has
/// an account).
pub async fn ask_reset(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let answer = visitor
        .call(
            &state.api,
            Call::post("/password-resets", json!({ "email": form.text("email") })),
        )
        .await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "No reset link could be sent");
    }
    message(
        &state,
        &visitor,
        StatusCode::OK,
        "Check your mail",
        "If an account has this address, a link to choose a new password is on its way.",
    )
}

/// `/reset-password?token=`: the page a reset mail links to (without a token: the form that
/// asks for one).
pub async fn reset_page(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = param(&params, "token");
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "reset.html",
        context! { token => token, error => None::<String> },
    )
}

/// `POST /reset-password`: the new password, with the mail's token.
pub async fn reset(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let token = form.text("token").to_owned();
    let answer = visitor
        .call(
            &state.api,
            Call::post(
                "/password-resets/complete",
                json!({ "token": token, "new_password": form.raw("new_password") }),
            ),
        )
        .await;
    if answer.ok() {
        return message(
            &state,
            &visitor,
            StatusCode::OK,
            "Your password is changed",
            "Log in with the new one.",
        );
    }
    if !answer.status.is_client_error() {
        return failure(
            &state,
            &visitor,
            &answer,
            "The password cannot be changed right now",
        );
    }
    page(
        &state,
        &visitor,
        answer.status,
        "reset.html",
        context! { token => token, error => answer.problem() },
    )
}

/// `/verify-email?token=`: the page a verification mail links to. Confirming is a button (a
/// form), so that a mail scanner opening the link confirms nothing.
pub async fn verify_email(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = param(&params, "token");
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "message.html",
        context! {
            title => "Confirm your email address",
            text => "Press the button to confirm that this address is yours.",
            confirm_token => token,
        },
    )
}

/// `POST /verify-email`: confirms the address with the mail's token.
pub async fn confirm_email(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let answer = visitor
        .call(
            &state.api,
            Call::post("/users/verify", json!({ "token": form.text("token") })),
        )
        .await;
    if !answer.ok() {
        return failure(
            &state,
            &visitor,
            &answer,
            "The address could not be confirmed",
        );
    }
    message(
        &state,
        &visitor,
        StatusCode::OK,
        "Your email address is confirmed",
        "Thank you.",
    )
}
