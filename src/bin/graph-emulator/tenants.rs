//! Per-tenant photo update settings and emulation options.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Stored properties of a tenant's photoUpdateSettings, without `id` and
/// `@odata.*`. An empty map is a tenant that never set them.
pub type Settings = Map<String, Value>;

/// Settings of a tenant that has not changed them: every user may update
/// their photo in the cloud.
pub fn default_settings() -> Settings {
    let Value::Object(settings) = json!({ "source": "cloud", "allowedRoles": null }) else {
        unreachable!("the literal is an object");
    };
    settings
}

/// Emulation options of one tenant, set through the control API.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantOptions {
    /// Number of Graph GETs after each write that still return the value from
    /// before the write.
    #[serde(default)]
    pub stale_reads_after_write: u32,
}

struct TenantState {
    settings: Settings,
    options: TenantOptions,
    stale: Option<StaleView>,
}

/// The value that lagging reads return, and how many reads still lag.
struct StaleView {
    previous: Settings,
    remaining: u32,
}

impl Default for TenantState {
    fn default() -> Self {
        TenantState {
            settings: default_settings(),
            options: TenantOptions::default(),
            stale: None,
        }
    }
}

/// State of every tenant, created with defaults on first use.
#[derive(Default)]
pub struct Tenants {
    by_id: HashMap<String, TenantState>,
}

impl Tenants {
    fn entry(&mut self, tenant: &str) -> &mut TenantState {
        self.by_id.entry(tenant.to_owned()).or_default()
    }

    /// Returns the settings for a Graph GET. They lag behind the latest write
    /// while stale reads are pending.
    pub fn read(&mut self, tenant: &str) -> Settings {
        let state = self.entry(tenant);
        let Some(stale) = state.stale.as_mut() else {
            return state.settings.clone();
        };
        let previous = stale.previous.clone();
        stale.remaining -= 1;
        if stale.remaining == 0 {
            state.stale = None;
        }
        previous
    }

    /// Returns the latest settings, ignoring pending stale reads.
    pub fn current(&mut self, tenant: &str) -> Settings {
        self.entry(tenant).settings.clone()
    }

    /// Stores settings written through Graph and starts the tenant's stale reads.
    pub fn write(&mut self, tenant: &str, settings: Settings) {
        let state = self.entry(tenant);
        let previous = std::mem::replace(&mut state.settings, settings);
        let remaining = state.options.stale_reads_after_write;
        state.stale = (remaining > 0).then_some(StaleView {
            previous,
            remaining,
        });
    }

    /// Stores settings behind the client's back and drops pending stale reads.
    pub fn overwrite(&mut self, tenant: &str, settings: Settings) {
        let state = self.entry(tenant);
        state.settings = settings;
        state.stale = None;
    }

    pub fn options(&mut self, tenant: &str) -> TenantOptions {
        self.entry(tenant).options.clone()
    }

    pub fn set_options(&mut self, tenant: &str, options: TenantOptions) {
        self.entry(tenant).options = options;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(source: &str) -> Settings {
        let Value::Object(map) = json!({ "source": source }) else {
            unreachable!()
        };
        map
    }

    #[test]
    fn new_tenant_has_default_settings() {
        let mut tenants = Tenants::default();
        assert_eq!(tenants.read("t.com"), default_settings());
    }

    #[test]
    fn stale_reads_lag_then_catch_up() {
        let mut tenants = Tenants::default();
        tenants.set_options(
            "t.com",
            TenantOptions {
                stale_reads_after_write: 2,
            },
        );
        tenants.write("t.com", settings("onPremises"));
        assert_eq!(tenants.read("t.com"), default_settings());
        assert_eq!(tenants.read("t.com"), default_settings());
        assert_eq!(tenants.read("t.com"), settings("onPremises"));
    }

    #[test]
    fn overwrite_drops_stale_reads() {
        let mut tenants = Tenants::default();
        tenants.set_options(
            "t.com",
            TenantOptions {
                stale_reads_after_write: 5,
            },
        );
        tenants.write("t.com", settings("onPremises"));
        tenants.overwrite("t.com", settings("unknownFutureValue"));
        assert_eq!(tenants.read("t.com"), settings("unknownFutureValue"));
    }
}
