//! `voxgate migrate` and `voxgate keys`.

use anyhow::Context;
use voxgate_api::keys::{NewKey, check_new_key};
use voxgate_domain::key::{KeyKind, mint};
use voxgate_store::{Store, StoreError};

use crate::config::{DbArgs, KeysCommand};

async fn connect(db: &DbArgs) -> anyhow::Result<Store> {
    let store = Store::connect(&db.url(), &db.pool_options()).await.context("connecting to the database")?;
    store.migrate().await.context("migrating the database")?;
    Ok(store)
}

/// Applies migrations and reports what is applied.
pub async fn migrate(db: &DbArgs) -> anyhow::Result<()> {
    let store = connect(db).await?;
    let applied = store.applied_migrations().await?;
    println!("migrations applied: {applied:?}");
    store.close().await;
    Ok(())
}

/// Runs a `keys` subcommand; output goes to `out` (standard output in the binary).
pub async fn keys(db: &DbArgs, cmd: KeysCommand, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let store = connect(db).await?;
    match cmd {
        KeysCommand::Create { name, public, assistants } => {
            let new = NewKey { name, kind: if public { KeyKind::Public } else { KeyKind::Private }, assistant_ids: assistants };
            if let Err(e) = check_new_key(&new) {
                let details: Vec<String> = e.fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect();
                anyhow::bail!("{}", if details.is_empty() { e.message } else { details.join("; ") });
            }
            for id in &new.assistant_ids {
                match store.get_assistant(id).await {
                    Err(StoreError::NotFound) => anyhow::bail!("no assistant {id}"),
                    other => {
                        other?;
                    }
                }
            }
            let m = mint(new.name.trim(), new.kind, new.assistant_ids);
            store.insert_key(&m.key).await?;
            writeln!(out, "Created {} key {} ({}). It is shown once:", m.key.kind.as_str(), m.key.id, m.key.name)?;
            writeln!(out, "{}", m.secret)?;
        }
        KeysCommand::List => {
            for k in store.list_keys().await? {
                let state = if k.revoked_at.is_some() { "revoked" } else { "live" };
                writeln!(out, "{}  {:<7}  {:<7}  {}…  {}", k.id, k.kind.as_str(), state, k.prefix, k.name)?;
            }
        }
        KeysCommand::Revoke { id } => match store.revoke_key(&id).await {
            Ok(k) => writeln!(out, "Revoked key {} ({}).", k.id, k.name)?,
            Err(StoreError::NotFound) => anyhow::bail!("no key {id}"),
            Err(e) => return Err(e.into()),
        },
    }
    store.close().await;
    Ok(())
}
