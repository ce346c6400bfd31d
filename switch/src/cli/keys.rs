//! `switch keys` and `switch mandates`: API keys and service-provider
//! mandates of the internal-frame listener, made beside a running switch
//! (the key file has its own lock).

use crate::cli::args::{KeysAction, MandatesAction};
use crate::keys::{KeyAdmin, Owner, Scope};

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

/// `switch mandates grant|revoke|list`. `config`: the switch's
/// configuration file (`--config`), for the merchants it serves.
pub(crate) fn mandates_command(
    action: MandatesAction,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    match action {
        MandatesAction::Grant {
            data_dir,
            merchant,
            provider,
            scopes,
        } => {
            let asked = Scope::parse_list(&scopes)?;
            let scopes: Vec<Scope> = Scope::all()
                .into_iter()
                .filter(|s| asked.contains(s))
                .collect();
            let overrides = crate::Overrides::from_env()?.then(crate::Overrides {
                data_dir: Some(data_dir.clone()),
                ..Default::default()
            });
            let known = crate::directory::merchant_ids(
                &crate::Config::load(config, overrides)?,
                &data_dir,
            )?;
            let changed =
                KeyAdmin::new(&data_dir).grant_mandate(&merchant, &provider, &scopes, &|mid| {
                    known.iter().any(|k| k == mid)
                })?;
            let names = scopes
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(",");
            if changed {
                println!("granted {provider} a mandate for {merchant}: {names}");
            } else {
                println!("{provider} already holds a mandate for {merchant}: {names}");
            }
        }
        MandatesAction::Revoke {
            data_dir,
            merchant,
            provider,
        } => {
            KeyAdmin::new(&data_dir).revoke_mandate(&merchant, &provider)?;
            println!("revoked the mandate of {merchant} to {provider}");
        }
        MandatesAction::List { data_dir, provider } => {
            println!("MERCHANT         PROVIDER      GRANTED     STATUS    SCOPES");
            let mandates = KeyAdmin::new(&data_dir).mandates()?;
            for m in mandates
                .iter()
                .filter(|m| provider.as_ref().is_none_or(|p| *p == m.provider))
            {
                let status = if m.revoked_unix_s.is_some() {
                    "revoked"
                } else {
                    "in force"
                };
                let scopes = m.scopes.iter().map(|s| s.name()).collect::<Vec<_>>();
                println!(
                    "{:<16} {:<13} {:<11} {status:<9} {}",
                    m.merchant,
                    m.provider,
                    m.granted_unix_s,
                    scopes.join(",")
                );
            }
        }
    }
    Ok(())
}
