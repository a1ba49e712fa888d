//! Which client build an auth request came from, pure: browser engine and
//! major version, iOS app name and version (`Name/1.2 CFNetwork/…`), Android
//! (`Dalvik/…`, `okhttp/…`), Node, plus an optional `client_version` param the
//! app sends. Only the group is kept, never the raw User-Agent.

use memchr::memmem::Finder;
use std::sync::LazyLock;

/// At most this many characters of an app-supplied name or version.
const MAX_PART: usize = 32;
/// A major version longer than this is not one (Chrome's is 3 digits): a
/// made-up `Chrome/<120,000 digits>` must not become a 120 KB group, Redis key
/// and status row.
const MAX_MAJOR_DIGITS: usize = 5;
/// The longest group kept, whatever its parts.
const MAX_GROUP: usize = 96;

fn clean(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || "._- ".contains(*c)).take(MAX_PART).collect()
}

/// The tokens looked for, each searcher built once: `str::find` builds one per
/// call, which for a browser's User-Agent came to about 3k instructions per
/// authorization (docs/performance.md#instructions).
struct Tokens {
    cfnetwork: Finder<'static>,
    android: Finder<'static>,
    okhttp: Finder<'static>,
    edge: Finder<'static>,
    opera: Finder<'static>,
    firefox: Finder<'static>,
    chrome: Finder<'static>,
    safari: Finder<'static>,
    version: Finder<'static>,
    node: Finder<'static>,
}

static TOKENS: LazyLock<Tokens> = LazyLock::new(|| Tokens {
    cfnetwork: Finder::new(" CFNetwork/"),
    android: Finder::new("Android "),
    okhttp: Finder::new("okhttp/"),
    edge: Finder::new("Edg/"),
    opera: Finder::new("OPR/"),
    firefox: Finder::new("Firefox/"),
    chrome: Finder::new("Chrome/"),
    safari: Finder::new("Safari/"),
    version: Finder::new("Version/"),
    node: Finder::new("Node.js"),
});

fn contains(ua: &str, token: &Finder) -> bool {
    token.find(ua.as_bytes()).is_some()
}

fn major_after<'a>(ua: &'a str, token: &Finder) -> Option<&'a str> {
    // The needle is ASCII, so the index after it is a char boundary.
    let rest = &ua[token.find(ua.as_bytes())? + token.needle().len()..];
    let major = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    (1..=MAX_MAJOR_DIGITS).contains(&major.len()).then_some(major)
}

/// The group of a User-Agent (None: absent) and an optional `client_version`.
pub fn group(user_agent: Option<&str>, client_version: Option<&str>) -> String {
    let ua = user_agent.unwrap_or("").trim();
    let base = if ua.is_empty() {
        "no User-Agent (Node?)".to_owned()
    } else if let Some(rest) = TOKENS.cfnetwork.find(ua.as_bytes()).map(|at| &ua[..at]) {
        // `AppName/1.2.3 CFNetwork/1410.0.3 Darwin/22.6.0`
        let (name, version) = rest.rsplit_once('/').unwrap_or((rest, ""));
        format!("iOS app {} {}", clean(name), clean(version)).trim_end().to_owned()
    } else if ua.starts_with("Dalvik/") {
        match major_after(ua, &TOKENS.android) {
            Some(v) => format!("Android {v} (Dalvik)"),
            None => "Android (Dalvik)".into(),
        }
    } else if ua.starts_with("okhttp/") {
        format!("Android okhttp {}", major_after(ua, &TOKENS.okhttp).unwrap_or("?"))
    } else if let Some(v) = major_after(ua, &TOKENS.edge) {
        format!("Edge {v}")
    } else if let Some(v) = major_after(ua, &TOKENS.opera) {
        format!("Opera {v}")
    } else if let Some(v) = major_after(ua, &TOKENS.firefox) {
        format!("Firefox {v}")
    } else if let Some(v) = major_after(ua, &TOKENS.chrome) {
        format!("Chrome {v}")
    } else if contains(ua, &TOKENS.safari)
        && let Some(v) = major_after(ua, &TOKENS.version)
    {
        format!("Safari {v}")
    } else if ua.starts_with("node") || contains(ua, &TOKENS.node) || ua.starts_with("undici") {
        "Node".into()
    } else {
        "other".into()
    };
    let mut group = match client_version.map(clean).filter(|v| !v.is_empty()) {
        Some(v) => format!("{base} · {v}"),
        None => base,
    };
    if let Some((cut, _)) = group.char_indices().nth(MAX_GROUP) {
        group.truncate(cut);
    }
    group
}

#[cfg(test)]
mod tests {
    use super::group;

    #[test]
    fn real_user_agents_are_grouped_by_engine_and_build() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome 131",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
                "Edge 131",
            ),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "Firefox 133"),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
                "Safari 17",
            ),
            ("MyShop/4.2.1 CFNetwork/1410.0.3 Darwin/22.6.0", "iOS app MyShop 4.2.1"),
            ("Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230805.001)", "Android 13 (Dalvik)"),
            ("okhttp/4.12.0", "Android okhttp 4"),
            ("node", "Node"),
            ("curl/8.5.0", "other"),
        ];
        for (ua, want) in cases {
            assert_eq!(group(Some(ua), None), want, "{ua}");
        }
        assert_eq!(group(None, None), "no User-Agent (Node?)");
        assert_eq!(group(Some("okhttp/4.12.0"), Some("2.3.1")), "Android okhttp 4 · 2.3.1");
        // App-supplied parts are cleaned and shortened: no markup, no unbounded labels.
        let g = group(Some(&format!("<b>{}/1 CFNetwork/1 Darwin/1", "x".repeat(100))), Some("<script>"));
        assert!(!g.contains('<') && g.len() < 100, "{g}");
    }

    #[test]
    fn made_up_versions_do_not_make_long_groups() {
        let digits = "9".repeat(120_000);
        for ua in [
            format!("Mozilla/5.0 Chrome/{digits}.0 Safari/537.36"),
            format!("Dalvik/2.1.0 (Linux; U; Android {digits}; Pixel)"),
            format!("okhttp/{digits}"),
            format!("Mozilla/5.0 Version/{digits} Safari/605.1.15"),
        ] {
            let g = group(Some(&ua), Some(&"v".repeat(1000)));
            assert!(g.chars().count() <= super::MAX_GROUP, "{} chars", g.len());
            assert!(!g.contains("999999"), "{g}");
        }
        assert_eq!(group(Some("Mozilla/5.0 Chrome/99999.0"), None), "Chrome 99999");
    }
}
