//! The User aggregate: an account of a customer or of staff, from registration to erasure.
//!
//! Personal data (email, name, phone, addresses) arrives [`Sealed`] under the person's key and is
//! kept sealed; the aggregate decides on the account's life (verified, deactivated, erased) and
//! never sees a password, a password hash or a token: those live in the credentials table, which
//! no event describes. Erasure clears every sealed value from the state, and the application
//! destroys the person's key, so the values in the events before it can no longer be read.

use std::collections::BTreeSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::personal::Sealed;

/// The stream type of users.
pub const USER_STREAM_TYPE: &str = "user";

/// What a staff account may do beyond its own profile (CONTRACT.md, "Identity and access").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Products and stock.
    Catalog,
    /// Every order, refunds, fulfilment, saga retries, dead letters.
    Support,
    /// All of the above, accounts, webhooks, and what an auditor may read.
    Admin,
    /// The event history and the audit routes; never writes.
    Auditor,
}

impl Role {
    /// Every role, in the order they are listed.
    pub const ALL: [Role; 4] = [Role::Catalog, Role::Support, Role::Admin, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Catalog => "catalog",
            Role::Support => "support",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    /// A role by its name; `staff` is not one (see [`parse_roles`]).
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

/// Roles from a comma-separated list (`catalog,support`); `staff` stands for catalog and
/// support. An unknown name is an error naming the accepted ones.
pub fn parse_roles(list: &str) -> Result<BTreeSet<Role>, String> {
    let mut roles = BTreeSet::new();
    for name in list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        if name == "staff" {
            roles.extend([Role::Catalog, Role::Support]);
            continue;
        }
        let role = Role::parse(name).ok_or_else(|| {
            format!(
                "unknown role {name:?}: the roles are staff (catalog and support), catalog, support, admin and auditor"
            )
        })?;
        roles.insert(role);
    }
    if roles.is_empty() {
        return Err("give at least one role: staff, catalog, support, admin or auditor".to_owned());
    }
    Ok(roles)
}

/// Whether an account belongs to a customer of the shop or to its staff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    #[default]
    Customer,
    Staff,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Customer => "customer",
            AccountKind::Staff => "staff",
        }
    }
}

/// Where an account stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    #[default]
    Active,
    /// Cannot log in; its data is kept.
    Deactivated,
    /// Its personal data is gone for good.
    Erased,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Deactivated => "deactivated",
            UserStatus::Erased => "erased",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub kind: AccountKind,
    /// Empty for a customer.
    pub roles: BTreeSet<Role>,
    pub email: Sealed,
    pub name: Sealed,
    /// True for an account an operator created (its address is taken as verified).
    pub email_verified: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEmailVerified {
    pub user_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLoggedIn {
    pub user_id: Uuid,
    /// How: `password`.
    pub method: String,
}

/// The profile after a change: each value as it now stands (sealed), the unchanged ones copied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfileChanged {
    pub user_id: Uuid,
    pub name: Sealed,
    pub phone: Option<Sealed>,
    /// The postal addresses as one sealed JSON array, or none.
    pub addresses: Option<Sealed>,
    /// The language the person's messages are written in (a lower-case ISO 639-1 code), or none
    /// (English). Schema v2; a v1 change had none. Not personal data of its own: not sealed.
    #[serde(default)]
    pub language: Option<String>,
}

/// The account's owner asked to reset its password: the notifier sends a one-time token to the
/// account's address (the token itself is never in an event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPasswordResetRequested {
    pub user_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPasswordChanged {
    pub user_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPasswordReset {
    pub user_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeactivated {
    pub user_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserErased {
    pub user_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered(UserRegistered),
    UserEmailVerified(UserEmailVerified),
    UserLoggedIn(UserLoggedIn),
    UserProfileChanged(UserProfileChanged),
    UserPasswordChanged(UserPasswordChanged),
    UserPasswordReset(UserPasswordReset),
    UserDeactivated(UserDeactivated),
    UserErased(UserErased),
    UserPasswordResetRequested(UserPasswordResetRequested),
}

/// A change of the profile: `None` leaves a value as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileChange {
    pub name: Option<Sealed>,
    /// `Some(None)` clears the phone number.
    pub phone: Option<Option<Sealed>>,
    /// `Some(None)` clears the addresses.
    pub addresses: Option<Option<Sealed>>,
    /// `Some(None)` goes back to English.
    pub language: Option<Option<String>>,
}

impl ProfileChange {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.phone.is_none()
            && self.addresses.is_none()
            && self.language.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserCommand {
    Register {
        user_id: Uuid,
        kind: AccountKind,
        roles: BTreeSet<Role>,
        email: Sealed,
        name: Sealed,
        email_verified: bool,
    },
    VerifyEmail,
    RecordLogin {
        method: String,
    },
    ChangeProfile(ProfileChange),
    /// The new password is in the credentials table already; this records that it changed.
    RecordPasswordChange,
    /// The same, after a reset by email.
    RecordPasswordReset,
    /// The owner asked for a reset token by email.
    RequestPasswordReset,
    Deactivate,
    Erase,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("no user has this id")]
    NotFound,
    #[error("the user exists already")]
    AlreadyExists,
    #[error("a customer account has no roles; a staff account needs at least one")]
    RolesDoNotFitKind,
    #[error("the account was deactivated")]
    Deactivated,
    #[error("the account was erased")]
    Erased,
    #[error("give at least one of name, phone, addresses, language")]
    EmptyChange,
}

/// An account as its events left it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user_id: Option<Uuid>,
    pub kind: AccountKind,
    pub roles: BTreeSet<Role>,
    pub email: Option<Sealed>,
    pub name: Option<Sealed>,
    pub phone: Option<Sealed>,
    pub addresses: Option<Sealed>,
    /// The language of the person's messages, if one was chosen.
    #[serde(default)]
    pub language: Option<String>,
    pub email_verified: bool,
    pub status: UserStatus,
}

impl User {
    fn decide(&self, command: UserCommand) -> Result<Option<UserEvent>, UserError> {
        let Some(user_id) = self.user_id else {
            let UserCommand::Register {
                user_id,
                kind,
                roles,
                email,
                name,
                email_verified,
            } = command
            else {
                return Err(UserError::NotFound);
            };
            if (kind == AccountKind::Customer) != roles.is_empty() {
                return Err(UserError::RolesDoNotFitKind);
            }
            return Ok(Some(UserEvent::UserRegistered(UserRegistered {
                user_id,
                kind,
                roles,
                email,
                name,
                email_verified,
            })));
        };
        match (&command, self.status) {
            (UserCommand::Register { .. }, _) => return Err(UserError::AlreadyExists),
            (UserCommand::Erase, UserStatus::Erased) => return Ok(None),
            (UserCommand::Erase, _) => {
                return Ok(Some(UserEvent::UserErased(UserErased { user_id })));
            }
            (_, UserStatus::Erased) => return Err(UserError::Erased),
            (UserCommand::Deactivate, UserStatus::Deactivated) => return Ok(None),
            (UserCommand::Deactivate, _) => {
                return Ok(Some(UserEvent::UserDeactivated(UserDeactivated {
                    user_id,
                })));
            }
            (_, UserStatus::Deactivated) => return Err(UserError::Deactivated),
            _ => {}
        }
        let event = match command {
            UserCommand::VerifyEmail if self.email_verified => return Ok(None),
            UserCommand::VerifyEmail => UserEvent::UserEmailVerified(UserEmailVerified { user_id }),
            UserCommand::RecordLogin { method } => {
                UserEvent::UserLoggedIn(UserLoggedIn { user_id, method })
            }
            UserCommand::ChangeProfile(change) => {
                if change.is_empty() {
                    return Err(UserError::EmptyChange);
                }
                let Some(name) = change.name.or_else(|| self.name.clone()) else {
                    return Err(UserError::Erased);
                };
                UserEvent::UserProfileChanged(UserProfileChanged {
                    user_id,
                    name,
                    phone: change.phone.unwrap_or_else(|| self.phone.clone()),
                    addresses: change.addresses.unwrap_or_else(|| self.addresses.clone()),
                    language: change.language.unwrap_or_else(|| self.language.clone()),
                })
            }
            UserCommand::RecordPasswordChange => {
                UserEvent::UserPasswordChanged(UserPasswordChanged { user_id })
            }
            UserCommand::RecordPasswordReset => {
                UserEvent::UserPasswordReset(UserPasswordReset { user_id })
            }
            UserCommand::RequestPasswordReset => {
                UserEvent::UserPasswordResetRequested(UserPasswordResetRequested { user_id })
            }
            UserCommand::Register { .. } | UserCommand::Deactivate | UserCommand::Erase => {
                return Err(UserError::AlreadyExists);
            }
        };
        Ok(Some(event))
    }

    /// Whether the account may log in and act.
    pub fn is_active(&self) -> bool {
        self.user_id.is_some() && self.status == UserStatus::Active
    }
}

impl Aggregate for User {
    const TYPE: &'static str = USER_STREAM_TYPE;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered(registered) => {
                self.user_id = Some(registered.user_id);
                self.kind = registered.kind;
                self.roles = registered.roles;
                self.email = Some(registered.email);
                self.name = Some(registered.name);
                self.email_verified = registered.email_verified;
            }
            UserEvent::UserEmailVerified(_) => self.email_verified = true,
            UserEvent::UserLoggedIn(_)
            | UserEvent::UserPasswordChanged(_)
            | UserEvent::UserPasswordReset(_)
            | UserEvent::UserPasswordResetRequested(_) => {}
            UserEvent::UserProfileChanged(changed) => {
                self.name = Some(changed.name);
                self.phone = changed.phone;
                self.addresses = changed.addresses;
                self.language = changed.language;
            }
            UserEvent::UserDeactivated(_) => self.status = UserStatus::Deactivated,
            UserEvent::UserErased(_) => {
                self.status = UserStatus::Erased;
                self.email = None;
                self.name = None;
                self.phone = None;
                self.addresses = None;
            }
        }
    }
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserRegistered(_) => "UserRegistered",
            UserEvent::UserEmailVerified(_) => "UserEmailVerified",
            UserEvent::UserLoggedIn(_) => "UserLoggedIn",
            UserEvent::UserProfileChanged(_) => "UserProfileChanged",
            UserEvent::UserPasswordChanged(_) => "UserPasswordChanged",
            UserEvent::UserPasswordReset(_) => "UserPasswordReset",
            UserEvent::UserDeactivated(_) => "UserDeactivated",
            UserEvent::UserErased(_) => "UserErased",
            UserEvent::UserPasswordResetRequested(_) => "UserPasswordResetRequested",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::current_schema_version(&self.event_type()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::{AggregateTestExecutor, TestFramework};

    use super::*;

    fn ann() -> Uuid {
        Uuid::from_u128(0x05e7_0001)
    }

    fn sealed(text: &str) -> Sealed {
        Sealed::from_sealed_text(format!("sealed({text})"))
    }

    fn register(kind: AccountKind, roles: &[Role]) -> UserCommand {
        UserCommand::Register {
            user_id: ann(),
            kind,
            roles: roles.iter().copied().collect(),
            email: sealed("ann@example.com"),
            name: sealed("Ann"),
            email_verified: false,
        }
    }

    fn registered() -> UserEvent {
        UserEvent::UserRegistered(UserRegistered {
            user_id: ann(),
            kind: AccountKind::Customer,
            roles: BTreeSet::new(),
            email: sealed("ann@example.com"),
            name: sealed("Ann"),
            email_verified: false,
        })
    }

    fn erased() -> UserEvent {
        UserEvent::UserErased(UserErased { user_id: ann() })
    }

    fn deactivated() -> UserEvent {
        UserEvent::UserDeactivated(UserDeactivated { user_id: ann() })
    }

    fn given(events: Vec<UserEvent>) -> AggregateTestExecutor<User> {
        TestFramework::<User>::with(()).given(events)
    }

    fn state_after(events: Vec<UserEvent>) -> User {
        let mut user = User::default();
        for event in events {
            user.apply(event);
        }
        user
    }

    #[test]
    fn a_customer_registers_with_sealed_email_and_name() {
        given(vec![])
            .when(register(AccountKind::Customer, &[]))
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn a_customer_with_roles_or_staff_without_one_is_refused() {
        given(vec![])
            .when(register(AccountKind::Customer, &[Role::Admin]))
            .then_expect_error(UserError::RolesDoNotFitKind);
        given(vec![])
            .when(register(AccountKind::Staff, &[]))
            .then_expect_error(UserError::RolesDoNotFitKind);
    }

    #[test]
    fn registering_twice_is_refused() {
        given(vec![registered()])
            .when(register(AccountKind::Customer, &[]))
            .then_expect_error(UserError::AlreadyExists);
    }

    #[test]
    fn a_command_for_a_user_that_does_not_exist_is_refused() {
        given(vec![])
            .when(UserCommand::VerifyEmail)
            .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn verifying_an_email_twice_records_it_once() {
        let verified = UserEvent::UserEmailVerified(UserEmailVerified { user_id: ann() });
        given(vec![registered()])
            .when(UserCommand::VerifyEmail)
            .then_expect_events(vec![verified.clone()]);
        given(vec![registered(), verified])
            .when(UserCommand::VerifyEmail)
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_profile_change_carries_the_whole_profile_with_unchanged_values_copied() {
        let phone = sealed("+39 06 1234 5678");
        given(vec![registered()])
            .when(UserCommand::ChangeProfile(ProfileChange {
                phone: Some(Some(phone.clone())),
                ..ProfileChange::default()
            }))
            .then_expect_events(vec![UserEvent::UserProfileChanged(UserProfileChanged {
                user_id: ann(),
                name: sealed("Ann"),
                phone: Some(phone.clone()),
                addresses: None,
                language: None,
            })]);
        let with_phone = UserEvent::UserProfileChanged(UserProfileChanged {
            user_id: ann(),
            name: sealed("Ann"),
            phone: Some(phone.clone()),
            addresses: None,
            language: None,
        });
        given(vec![registered(), with_phone])
            .when(UserCommand::ChangeProfile(ProfileChange {
                language: Some(Some("de".to_owned())),
                ..ProfileChange::default()
            }))
            .then_expect_events(vec![UserEvent::UserProfileChanged(UserProfileChanged {
                user_id: ann(),
                name: sealed("Ann"),
                phone: Some(phone),
                addresses: None,
                language: Some("de".to_owned()),
            })]);
        given(vec![registered()])
            .when(UserCommand::ChangeProfile(ProfileChange::default()))
            .then_expect_error(UserError::EmptyChange);
    }

    #[test]
    fn a_reset_may_be_asked_for_an_active_account_only() {
        given(vec![registered()])
            .when(UserCommand::RequestPasswordReset)
            .then_expect_events(vec![UserEvent::UserPasswordResetRequested(
                UserPasswordResetRequested { user_id: ann() },
            )]);
        given(vec![registered(), deactivated()])
            .when(UserCommand::RequestPasswordReset)
            .then_expect_error(UserError::Deactivated);
    }

    #[test]
    fn a_deactivated_account_may_be_erased_but_not_changed() {
        given(vec![registered(), deactivated()])
            .when(UserCommand::RecordLogin {
                method: "password".to_owned(),
            })
            .then_expect_error(UserError::Deactivated);
        given(vec![registered(), deactivated()])
            .when(UserCommand::Deactivate)
            .then_expect_events(vec![]);
        given(vec![registered(), deactivated()])
            .when(UserCommand::Erase)
            .then_expect_events(vec![erased()]);
    }

    #[test]
    fn erasure_clears_every_sealed_value_and_refuses_every_later_change() {
        let user = state_after(vec![registered(), erased()]);
        assert_eq!(user.status, UserStatus::Erased);
        assert_eq!(
            (user.email, user.name, user.phone, user.addresses),
            (None, None, None, None)
        );
        given(vec![registered(), erased()])
            .when(UserCommand::Erase)
            .then_expect_events(vec![]);
        given(vec![registered(), erased()])
            .when(UserCommand::ChangeProfile(ProfileChange {
                name: Some(sealed("Back")),
                ..ProfileChange::default()
            }))
            .then_expect_error(UserError::Erased);
        given(vec![registered(), erased()])
            .when(UserCommand::Deactivate)
            .then_expect_error(UserError::Erased);
    }

    #[test]
    fn staff_roles_are_read_from_a_list_where_staff_means_catalog_and_support() {
        assert_eq!(
            parse_roles("staff").ok(),
            Some([Role::Catalog, Role::Support].into_iter().collect())
        );
        assert_eq!(
            parse_roles("admin, auditor").ok(),
            Some([Role::Admin, Role::Auditor].into_iter().collect())
        );
        assert!(
            parse_roles("root")
                .unwrap_err()
                .contains("unknown role \"root\"")
        );
        assert!(parse_roles(" , ").is_err());
    }
}
