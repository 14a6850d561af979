//! `mercato serve`: runs the roles of the configuration until SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use server::{Config, Result, Role, Server, Settings};

/// The flags only `serve` (and `config`) take; every other setting is global.
#[derive(Debug, clap::Args)]
pub struct Flags {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "MERCATO_LISTEN")]
    listen: Option<SocketAddr>,
    /// Which part to run, for scale-out [default: all]
    #[arg(long, env = "MERCATO_ROLE", value_enum)]
    role: Option<Role>,
}

impl Flags {
    /// Puts these flags into the flag layer of the settings.
    pub fn apply(&self, settings: &mut Settings) {
        settings.listen = self.listen.or(settings.listen);
        settings.role = self.role.or(settings.role);
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub flags: Flags,
}

pub async fn run(config: Config) -> Result<()> {
    let listener = server::bind(config.listen).await?;
    let server = Server::build(&config, listener).await?;
    println!("mercato listening on http://{}", server.local_addr());
    server.run_until(server::shutdown_signal()).await
}
