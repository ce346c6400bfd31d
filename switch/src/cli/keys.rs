//! `switch keys` and `switch mandates`: API keys and service-provider
//! mandates of the internal-frame listener, made beside a running switch
//! (the key file has its own lock).

use crate::cli::args::{KeysAction, MandatesAction};
use crate::keys::{KeyAdmin, Owner};

/// `switch keys create|list|revoke`.
pub(crate) fn keys_command(action: KeysAction) -> anyhow::Result<()> {
    match action {
        KeysAction::Create {
            data_dir,
            merchant,
            provider,
            name,
        } => {
            let owner = match (merchant, provider) {
                (Some(mid), _) => Owner::Merchant(mid),
                (None, Some(pid)) => Owner::Provider(pid),
                (None, None) => anyhow::bail!("--merchant or --provider is required"),
            };
            let key = KeyAdmin::new(&data_dir).create_key(owner, &name)?;
            println!("client_id: {}", key.client_id);
            println!("secret:    {}", key.secret);
            eprintln!("The secret is shown this once; only its hash is stored.");
        }
        KeysAction::List { data_dir } => {
            println!("CLIENT_ID     OWNER                     SECRET   CREATED     STATUS   NAME");
            for k in KeyAdmin::new(&data_dir).keys()? {
                let owner = match &k.owner {
                    Owner::Merchant(mid) => format!("merchant {mid}"),
                    Owner::Provider(pid) => format!("provider {pid}"),
                };
                let status = if k.revoked_unix_s.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<13} {owner:<25} {:<8} {:<11} {status:<8} {}",
                    k.client_id, k.secret_hint, k.created_unix_s, k.name
                );
            }
        }
        KeysAction::Revoke { data_dir, id } => {
            KeyAdmin::new(&data_dir).revoke_key(&id)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// `switch mandates grant|revoke|list`.
pub(crate) fn mandates_command(action: MandatesAction) -> anyhow::Result<()> {
    match action {
        MandatesAction::Grant {
            data_dir,
            merchant,
            provider,
        } => {
            KeyAdmin::new(&data_dir).grant_mandate(&merchant, &provider)?;
            println!("granted {provider} a mandate for {merchant}");
        }
        MandatesAction::Revoke {
            data_dir,
            merchant,
            provider,
        } => {
            KeyAdmin::new(&data_dir).revoke_mandate(&merchant, &provider)?;
            println!("revoked the mandate of {merchant} to {provider}");
        }
        MandatesAction::List { data_dir } => {
            println!("MERCHANT         PROVIDER      GRANTED     STATUS");
            for m in KeyAdmin::new(&data_dir).mandates()? {
                let status = if m.revoked_unix_s.is_some() {
                    "revoked"
                } else {
                    "in force"
                };
                println!(
                    "{:<16} {:<13} {:<11} {status}",
                    m.merchant, m.provider, m.granted_unix_s
                );
            }
        }
    }
    Ok(())
}
