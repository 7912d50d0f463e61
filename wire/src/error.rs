//! The body of an error answer of the HTTP API.

use serde::{Deserialize, Serialize};

/// `{"error": "…"}`: 4xx bodies name the problem, 5xx bodies what failed; `"limit"`
/// (`limits.max_…`) names the limit a refused request reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit: Option<String>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            limit: None,
        }
    }
}
