//! `[incidents]` of `cdlake.toml`: where the incidents of alerting and incident tools
//! (Alertmanager, Grafana, PagerDuty, Opsgenie, incident.io) find their service and
//! environment. Read by the receivers when they normalise, and by the configuration loader.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[incidents]` in `cdlake.toml`: where incidents of the alerting and incident tools find
/// their service and environment.
///
/// ```toml
/// [incidents]
/// service_labels = ["service", "app", "job"]                 # Alertmanager/Grafana labels, first found wins
/// environment_labels = ["env", "environment", "namespace"]
/// default_environment = "production"                         # when an incident names none ("" = none)
/// incidentio_service_field = "service"                       # custom field whose name contains this
/// incidentio_environment_field = "environment"
///
/// [incidents.services]        # a tool's service (name or id) → cdlake service
/// "API Service" = "api"       # PagerDuty service name
/// PA2P440 = "checkout"        # PagerDuty service id
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentRules {
    /// Alert labels naming the service, in order of preference.
    pub service_labels: Vec<String>,
    /// Alert labels naming the environment, in order of preference.
    pub environment_labels: Vec<String>,
    /// The environment of an incident that names none; empty: none.
    pub default_environment: String,
    /// A tool's service name or id → the cdlake service.
    pub services: BTreeMap<String, String>,
    /// The incident.io custom field naming the service: the first whose name contains this
    /// (case-insensitive).
    pub incidentio_service_field: String,
    /// The incident.io custom field naming the environment, likewise.
    pub incidentio_environment_field: String,
}

impl Default for IncidentRules {
    fn default() -> Self {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect();
        Self {
            service_labels: names(&["service", "app", "job"]),
            environment_labels: names(&["env", "environment", "namespace"]),
            default_environment: "production".into(),
            services: BTreeMap::new(),
            incidentio_service_field: "service".into(),
            incidentio_environment_field: "environment".into(),
        }
    }
}

impl IncidentRules {
    /// The cdlake service of a tool's service, given as its names and ids in order of
    /// preference: the first that `[incidents.services]` maps, else the first given.
    pub fn service<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Option<String> {
        let mut given = candidates
            .clone()
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        candidates
            .into_iter()
            .find_map(|c| self.services.get(c.trim()))
            .cloned()
            .or_else(|| given.next().map(str::to_string))
    }

    /// The environment an incident names, else the default.
    pub fn environment(&self, named: Option<&str>) -> Option<String> {
        named
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .or(Some(self.default_environment.trim()).filter(|s| !s.is_empty()))
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_map_by_any_name_and_environments_default() {
        let mut rules = IncidentRules::default();
        rules.services.insert("PA2P440".into(), "checkout".into());
        assert_eq!(
            rules.service(["pig208", "PA2P440"]),
            Some("checkout".into())
        );
        assert_eq!(rules.service(["pig208", "PX"]), Some("pig208".into()));
        assert_eq!(rules.service([" ", "PX"]), Some("PX".into()));
        assert_eq!(rules.service(std::iter::empty::<&str>()), None);
        assert_eq!(rules.environment(Some("staging")), Some("staging".into()));
        assert_eq!(rules.environment(None), Some("production".into()));
        rules.default_environment = String::new();
        assert_eq!(rules.environment(Some(" ")), None);
    }
}
