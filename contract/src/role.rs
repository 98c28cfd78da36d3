//! The four origin servers and the two tiers they form.

use alloc::format;
use alloc::string::String;
use core::fmt;
use core::str::FromStr;

/// A tier of the site: one HAProxy backend with a main server and a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// The dashboard's files: backend `static`.
    Static,
    /// The data API: backend `api`.
    Api,
}

impl Tier {
    /// Both tiers.
    pub const ALL: [Tier; 2] = [Tier::Static, Tier::Api];

    /// The tier's name, which is also its HAProxy backend.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Static => "static",
            Tier::Api => "api",
        }
    }

    /// The path HAProxy checks on the main server (`http-check send ... uri`), and the
    /// recovery client probes through HAProxy.
    pub const fn health_path(self) -> &'static str {
        match self {
            Tier::Static => "/healthz",
            Tier::Api => "/api/healthz",
        }
    }

    /// The checked server, which a redeploy replaces.
    pub fn main(self) -> Role {
        match self {
            Tier::Static => Role::StaticMain,
            Tier::Api => Role::ApiMain,
        }
    }

    /// The unchecked backup server, answering maintenance.
    pub fn fallback(self) -> Role {
        match self {
            Tier::Static => Role::StaticFallback,
            Tier::Api => Role::ApiFallback,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Tier {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|tier| tier.name() == name)
            .ok_or_else(|| format!("there is no tier `{name}`; the tiers are static, api"))
    }
}

/// One of the four origin servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Serves the dashboard and its assets.
    StaticMain,
    /// Serves the maintenance page (503) while static-main is down.
    StaticFallback,
    /// Serves `/api/healthz` and `/api/data`.
    ApiMain,
    /// Answers 503 [`crate::MAINTENANCE_JSON`] while api-main is down.
    ApiFallback,
}

impl Role {
    /// Every role, in start order.
    pub const ALL: [Role; 4] = [
        Role::StaticMain,
        Role::StaticFallback,
        Role::ApiMain,
        Role::ApiFallback,
    ];

    /// The role's name: origin's subcommand and its server name in `haproxy.cfg`.
    pub fn name(self) -> &'static str {
        match self {
            Role::StaticMain => "static-main",
            Role::StaticFallback => "static-fallback",
            Role::ApiMain => "api-main",
            Role::ApiFallback => "api-fallback",
        }
    }

    /// The tier it serves.
    pub fn tier(self) -> Tier {
        match self {
            Role::StaticMain | Role::StaticFallback => Tier::Static,
            Role::ApiMain | Role::ApiFallback => Tier::Api,
        }
    }

    /// The HAProxy backend its server belongs to.
    pub fn backend(self) -> &'static str {
        self.tier().name()
    }

    /// Whether it is its tier's main (health-checked) server rather than the backup.
    pub fn is_main(self) -> bool {
        self.tier().main() == self
    }

    /// The health endpoint of its tier.
    pub fn health_path(self) -> &'static str {
        self.tier().health_path()
    }

    /// The environment variable carrying its address to HAProxy (`STATIC_MAIN_ADDR`, ...).
    pub fn addr_env(self) -> &'static str {
        match self {
            Role::StaticMain => crate::env::STATIC_MAIN_ADDR,
            Role::StaticFallback => crate::env::STATIC_FALLBACK_ADDR,
            Role::ApiMain => crate::env::API_MAIN_ADDR,
            Role::ApiFallback => crate::env::API_FALLBACK_ADDR,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == name)
            .ok_or_else(|| {
                format!(
                    "there is no role `{name}`; the roles are static-main, static-fallback, \
                     api-main, api-fallback"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tier_has_one_main_and_one_fallback() {
        for tier in Tier::ALL {
            assert!(tier.main().is_main());
            assert!(!tier.fallback().is_main());
            assert_eq!(tier.main().tier(), tier);
            assert_eq!(tier.fallback().tier(), tier);
        }
    }

    #[test]
    fn names_parse_back() {
        for role in Role::ALL {
            assert_eq!(role.name().parse(), Ok(role));
        }
        for tier in Tier::ALL {
            assert_eq!(tier.name().parse(), Ok(tier));
        }
        assert!("haproxy".parse::<Role>().is_err());
    }
}
