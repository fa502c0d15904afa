//! A config URL on the kernel command line: `keelson.config.url=` (and the Flatcar/CoreOS and
//! Ignition spellings). The URL may be `data:`, `http:` or `https:`.

use super::{Provider, ProviderError};
use crate::fetch::{Fetcher, ResourceSpec};

/// Keys looked up, in order of precedence.
pub const CMDLINE_URL_KEYS: [&str; 4] = [
    "keelson.config.url",
    "ignition.config.url",
    "flatcar.config.url",
    "coreos.config.url",
];

/// The value of `key=value` on a kernel command line (the last occurrence wins, as the kernel
/// does for its own parameters). Double quotes group spaces, as the kernel allows.
pub fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    let mut found = None;
    for word in split_cmdline(cmdline) {
        if let Some((k, v)) = word.split_once('=')
            && k == key
        {
            found = Some(v.to_string());
        }
    }
    found
}

pub(crate) fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Fetches the config named on the kernel command line.
#[derive(Debug, Clone)]
pub struct CmdlineProvider {
    /// The command line (contents of `/proc/cmdline`).
    pub cmdline: String,
    /// Fetcher used for the URL.
    pub fetcher: Fetcher,
}

impl CmdlineProvider {
    /// The key and URL this command line names, if any.
    pub fn url(&self) -> Option<(&'static str, String)> {
        CMDLINE_URL_KEYS.iter().find_map(|k| {
            cmdline_value(&self.cmdline, k)
                .filter(|v| !v.is_empty())
                .map(|v| (*k, v))
        })
    }
}

impl Provider for CmdlineProvider {
    fn name(&self) -> &'static str {
        "cmdline"
    }

    fn fetch_config(&self) -> Result<Option<Vec<u8>>, ProviderError> {
        let Some((key, url)) = self.url() else {
            return Ok(None);
        };
        tracing::info!(key, url = %crate::dataurl::url_head(&url), "fetching config named on the kernel command line");
        self.fetcher
            .fetch_bytes(&ResourceSpec::url(url))
            .map(Some)
            .map_err(|source| ProviderError::Fetch {
                provider: "cmdline",
                key: key.to_string(),
                error: Box::new(source),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::http::{HttpClient, RetryPolicy};

    fn provider(cmdline: &str) -> CmdlineProvider {
        CmdlineProvider {
            cmdline: cmdline.into(),
            fetcher: Fetcher::new(HttpClient::new(RetryPolicy::quick(1)).unwrap(), 1 << 20),
        }
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "root=/dev/vda keelson.config.url=http://a/b quiet",
                "keelson.config.url",
                Some("http://a/b"),
            ),
            (
                "keelson.config.url=x keelson.config.url=y",
                "keelson.config.url",
                Some("y"),
            ),
            ("a=\"b c\" d", "a", Some("b c")),
            ("xkeelson.config.url=1", "keelson.config.url", None),
            ("keelson.config.url", "keelson.config.url", None),
            ("  k=v=w\n", "k", Some("v=w")),
            ("", "k", None),
        ];
        for (line, key, want) in cases {
            assert_eq!(cmdline_value(line, key).as_deref(), *want, "{line}");
        }
    }

    #[test]
    fn precedence_and_fetch() {
        let p = provider("coreos.config.url=data:,old keelson.config.url=data:,new");
        assert_eq!(p.url().unwrap().0, "keelson.config.url");
        assert_eq!(p.fetch_config().unwrap(), Some(b"new".to_vec()));
        let p = provider("flatcar.config.url=data:,fc");
        assert_eq!(p.fetch_config().unwrap(), Some(b"fc".to_vec()));
        assert_eq!(provider("quiet").fetch_config().unwrap(), None);
        assert_eq!(
            provider("keelson.config.url=").fetch_config().unwrap(),
            None
        );
        let err = provider("keelson.config.url=data:,%zz")
            .fetch_config()
            .unwrap_err();
        assert!(err.to_string().contains("keelson.config.url"), "{err}");
    }
}
