//! A profile as an answer shows it: the sealed values of a read model opened with the person's
//! key, or shown as erased once the key is gone.

use domain::{Address, Sealed};
use serde::Serialize;

use crate::error::IdentityError;
use crate::person_keys::{PersonKeys, open_with};

/// The sealed personal values of one person, as a read model keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealedProfile {
    pub email: Option<Sealed>,
    pub name: Option<Sealed>,
    pub phone: Option<Sealed>,
    pub addresses: Option<Sealed>,
}

/// The personal values in the clear; every one `None` once the person is erased.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpenedProfile {
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub addresses: Option<Vec<Address>>,
    /// Whether the person's key was destroyed.
    pub erased: bool,
}

impl PersonKeys {
    /// Opens the sealed values of person `subject`, reading the person's key once.
    pub async fn open_profile(
        &self,
        subject: &str,
        sealed: &SealedProfile,
    ) -> Result<OpenedProfile, IdentityError> {
        let Some(key) = self.key(subject).await? else {
            return Ok(OpenedProfile {
                erased: true,
                ..OpenedProfile::default()
            });
        };
        let open = |field: &str, value: &Option<Sealed>| {
            value
                .as_ref()
                .map(|value| open_with(&key, subject, field, value))
                .transpose()
        };
        let mut opened = OpenedProfile {
            email: open("email", &sealed.email)?,
            name: open("name", &sealed.name)?,
            phone: open("phone", &sealed.phone)?,
            ..OpenedProfile::default()
        };
        if let Some(text) = open("addresses", &sealed.addresses)? {
            opened.addresses =
                Some(serde_json::from_str(&text).map_err(|error| {
                    IdentityError::Crypto(format!("sealed addresses: {error}"))
                })?);
        }
        Ok(opened)
    }
}
