//! A profile as an answer shows it: the sealed values of a read model opened with the person's
//! key, or shown as erased once the key is gone.

use domain::{Address, Sealed};
use serde::Serialize;

use crate::error::IdentityError;
use crate::person_keys::{Opened, PersonKeys};

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
    /// Opens the sealed values of person `subject`.
    pub async fn open_profile(
        &self,
        subject: &str,
        sealed: &SealedProfile,
    ) -> Result<OpenedProfile, IdentityError> {
        if !self.exists(subject).await? {
            return Ok(OpenedProfile {
                erased: true,
                ..OpenedProfile::default()
            });
        }
        let mut opened = OpenedProfile::default();
        for (field, value, target) in [
            ("email", &sealed.email, &mut opened.email),
            ("name", &sealed.name, &mut opened.name),
            ("phone", &sealed.phone, &mut opened.phone),
        ] {
            if let Some(value) = value {
                *target = self.open(subject, field, value).await?.into_plain();
            }
        }
        if let Some(value) = &sealed.addresses
            && let Opened::Plain(text) = self.open(subject, "addresses", value).await?
        {
            opened.addresses =
                Some(serde_json::from_str(&text).map_err(|error| {
                    IdentityError::Crypto(format!("sealed addresses: {error}"))
                })?);
        }
        Ok(opened)
    }
}
