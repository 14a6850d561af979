//! `mercato users add`: staff, auditor and admin accounts, made by an operator on the same
//! store `serve` uses. The password is read from standard input (without echo on a terminal).

use std::io::{BufRead, IsTerminal};

use server::{Config, Error, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a staff account (its email counts as verified); prints its user id
    Add {
        /// The account's email address (its login)
        #[arg(long, value_name = "EMAIL")]
        email: String,
        /// Its roles, comma-separated: staff (catalog and support), catalog, support, admin,
        /// auditor
        #[arg(long, value_name = "ROLES")]
        role: String,
        /// The name shown for it [default: the email's part before @]
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
}

/// The password: a line of standard input (prompted for, without echo, on a terminal).
fn read_password() -> Result<String> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("password for the new account: ")
            .map_err(|error| Error::runtime("cannot read the password from the terminal", error))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|error| {
                Error::runtime("cannot read the password from standard input", error)
            })?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        return Err(Error::Usage(
            "no password on standard input: pipe it in (`echo \"$PASSWORD\" | mercato users add ...`) or type it at the prompt".to_owned(),
        ));
    }
    Ok(password)
}

pub async fn run(config: Config, command: &Command) -> Result<()> {
    match command {
        Command::Add { email, role, name } => {
            let roles = domain::user::parse_roles(role).map_err(Error::Usage)?;
            let password = read_password()?;
            let name = name
                .clone()
                .unwrap_or_else(|| email.split('@').next().unwrap_or(email).to_owned());
            let user_id =
                server::platform::add_staff_account(&config, email, &name, &roles, &password)
                    .await?;
            let roles: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
            eprintln!(
                "created the account of {email} with the role(s) {}",
                roles.join(", ")
            );
            println!("{user_id}");
            Ok(())
        }
    }
}
