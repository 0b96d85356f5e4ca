//! A client of a running cashew's admin API, for the commands that talk to one
//! (`reload`, `stop`, `restart`, `status`, `top`): the status and JSON body of each
//! call, with the bearer token on every call when one is given.

use std::time::Duration;

use serde_json::Value;

pub(crate) struct AdminClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl AdminClient {
    /// A client of the admin API at `addr` (`ADDR:PORT`); calls give up after `timeout`.
    pub(crate) fn new(addr: &str, token: Option<String>, timeout: Duration) -> AdminClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        AdminClient {
            base: format!("http://{addr}"),
            token,
            agent,
        }
    }

    pub(crate) fn get(&self, path: &str) -> Result<(u16, Value), String> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.answer(path, request.call())
    }

    /// A document the call must answer with 200.
    pub(crate) fn document<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        match self.get(path)? {
            (200, body) => serde_json::from_value(body)
                .map_err(|e| format!("{}{path}: not the document expected: {e}", self.base)),
            (status, body) => Err(format!("{}{path}: {status} {body}", self.base)),
        }
    }

    pub(crate) fn post(&self, path: &str) -> Result<(u16, Value), String> {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.answer(path, request.send_empty())
    }

    /// The status and body; a body that is not JSON comes as a string. A refusal
    /// for want of the token is an error that says what to give.
    fn answer(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Value), String> {
        let mut response = response
            .map_err(|e| format!("cannot reach {} (cashew's admin API): {e}", self.base))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("reading the reply of {}{path}: {e}", self.base))?;
        if status == 401 {
            return Err(match self.token {
                None => "the admin API needs its token: give --admin-token-file, --admin-token or CASHEW_ADMIN_TOKEN".into(),
                Some(_) => "the admin API refused the token given".into(),
            });
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }
}
