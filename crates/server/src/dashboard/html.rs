//! HTML building blocks: escaping, the page layout, bars and times.
//!
//! Pages are built with `format!` and one escaping function instead of a template engine: there
//! are few pages, the Rust compiler checks every value they use, and it costs no dependency.
//! The rule that keeps it safe: every value that came from the database or the request goes
//! through [`esc`] (or [`attr_url`]) exactly once, at the point it is put into markup.

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::auth::Caller;

const LAYOUT: &str = include_str!("../../templates/layout.html");

/// Escape text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escape a value for use inside a URL query or path segment, then for HTML.
pub fn attr_url(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Which top-level section a page belongs to (highlighted in the nav).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Groups overview and group pages.
    Groups,
    /// Instances list and detail.
    Instances,
    /// Activity stream.
    Activity,
    /// The login page.
    Login,
}

/// Wrap `body` (already-escaped HTML) in the layout.
pub fn page(title: &str, section: Section, caller: Option<&Caller>, body: &str) -> String {
    let mut nav = String::new();
    if section != Section::Login {
        for (s, href, label) in [
            (Section::Groups, "/ui", "Groups"),
            (Section::Instances, "/ui/instances", "Instances"),
            (Section::Activity, "/ui/activity", "Activity"),
        ] {
            let class = if s == section {
                " class=\"active\""
            } else {
                ""
            };
            let _ = write!(nav, "<a href=\"{href}\"{class}>{label}</a>");
        }
    }
    let who = match caller {
        Some(c) => format!(
            "<span>token {} · {}</span><form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form>",
            esc(&c.token_id),
            esc(c.role.as_str())
        ),
        None => String::new(),
    };
    // Substitute the body last so text inside it can never be taken for a placeholder.
    LAYOUT
        .replace("{{title}}", &esc(title))
        .replace("{{nav}}", &nav)
        .replace("{{who}}", &who)
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
        .replace("{{body}}", body)
}

/// Colours for version bars, cycled; the target version always gets the first.
const PALETTE: [&str; 8] = [
    "#1a7f37", "#1f6feb", "#8250df", "#bf8700", "#cf222e", "#0a7ea4", "#6e7781", "#d4a72c",
];

/// A horizontal bar made of divs, one per (label, count), with a legend.
pub fn version_bar(parts: &[(String, i64)], target: Option<&str>) -> String {
    let total: i64 = parts.iter().map(|(_, n)| *n).sum();
    if total == 0 {
        return "<p class=\"empty\">No instances yet.</p>".to_string();
    }
    let mut ordered: Vec<&(String, i64)> = parts.iter().collect();
    // The target first (green), then the rest as given.
    ordered.sort_by_key(|(v, _)| Some(v.as_str()) != target);
    let mut bar = String::from("<div class=\"bar\">");
    let mut legend = String::from("<div class=\"legend\">");
    for (i, (label, n)) in ordered.iter().enumerate() {
        let colour = if target.is_some() && Some(label.as_str()) != target && i == 0 {
            PALETTE[1]
        } else {
            PALETTE[i % PALETTE.len()]
        };
        let pct = (*n as f64) * 100.0 / (total as f64);
        let _ = write!(
            bar,
            "<div style=\"width:{pct:.2}%;background:{colour}\" title=\"{}: {n} ({pct:.0}%)\"></div>",
            esc(label)
        );
        let _ = write!(
            legend,
            "<span><span class=\"sw\" style=\"background:{colour}\"></span>{} · {n} ({pct:.0}%)</span>",
            esc(label)
        );
    }
    bar.push_str("</div>");
    legend.push_str("</div>");
    bar + &legend
}

/// A bar of instance statuses, coloured by meaning (complete green, error red, ...).
pub fn status_bar(parts: &[(String, i64)]) -> String {
    let total: i64 = parts.iter().map(|(_, n)| *n).sum();
    if total == 0 {
        return "<p class=\"empty\">No instances yet.</p>".to_string();
    }
    let colour = |s: &str| match s {
        "complete" => "#1a7f37",
        "error" => "#cf222e",
        "on-hold" => "#bf8700",
        "update-granted" | "downloading" | "downloaded" | "installed" => "#1f6feb",
        _ => "#8c959f",
    };
    let mut bar = String::from("<div class=\"bar\">");
    let mut legend = String::from("<div class=\"legend\">");
    for (label, n) in parts {
        let c = colour(label);
        let pct = (*n as f64) * 100.0 / (total as f64);
        let _ = write!(
            bar,
            "<div style=\"width:{pct:.2}%;background:{c}\" title=\"{}: {n}\"></div>",
            esc(label)
        );
        let _ = write!(
            legend,
            "<span><span class=\"sw\" style=\"background:{c}\"></span>{} · {n} ({pct:.0}%)</span>",
            esc(label)
        );
    }
    bar.push_str("</div>");
    legend.push_str("</div>");
    bar + &legend
}

/// A progress bar for `done` of `total`.
pub fn progress(done: i64, total: i64) -> String {
    let pct = if total > 0 {
        (done as f64) * 100.0 / (total as f64)
    } else {
        0.0
    };
    format!(
        "<div class=\"progress\" title=\"{done} of {total}\"><div style=\"width:{pct:.1}%\"></div></div>"
    )
}

/// Unix seconds as a UTC time.
pub fn time(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ts.to_string())
}

/// A coloured badge for a status or severity name.
pub fn badge(name: &str) -> String {
    let class = match name {
        "complete" | "info" | "enabled" | "admin" => "ok",
        "error" | "halted" | "disabled" => "bad",
        "warning" | "on-hold" | "update-granted" | "downloading" | "downloaded" | "installed" => {
            "warn"
        }
        _ => "info",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(name))
}

/// A full error page with `status`.
pub fn error_page(caller: Option<&Caller>, status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<div class=\"flash bad\">{}</div><p><a href=\"/ui\">Back to the dashboard</a></p>",
        esc(message)
    );
    (
        status,
        Html(page(
            status.canonical_reason().unwrap_or("Error"),
            Section::Groups,
            caller,
            &body,
        )),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(attr_url("a b/c?d"), "a%20b%2Fc%3Fd");
    }

    #[test]
    fn bar_widths_add_up_and_labels_are_escaped() {
        let html = version_bar(&[("1.0.0".into(), 1), ("<b>".into(), 3)], Some("1.0.0"));
        assert!(html.contains("width:25.00%"), "{html}");
        assert!(html.contains("width:75.00%"), "{html}");
        assert!(
            html.contains("&lt;b&gt;") && !html.contains("<b>"),
            "{html}"
        );
        assert!(version_bar(&[], None).contains("No instances"));
    }

    #[test]
    fn layout_placeholders_are_filled_and_body_is_not_reinterpreted() {
        let html = page("T<1>", Section::Groups, None, "<p>{{title}}</p>");
        assert!(html.contains("<title>T&lt;1&gt; · Keelson</title>"));
        assert!(html.contains("<p>{{title}}</p>"));
        assert!(html.contains("class=\"active\">Groups"));
    }
}
