//! The kiosk page: one HTML file with its CSS and JS inline (no CDN, no web fonts, nothing fetched but
//! this server's API), with the run's settings filled in when the server starts.

use crate::{PreviewMode, RunInfo, ServeOptions};

const TEMPLATE: &str = include_str!("page/index.html");
const CONFIG_SLOT: &str = "/*MIEN_CONFIG*/{}";

/// The page with its settings: labels, their display names, whether a preview is there, and when to
/// call the stream stalled.
pub(crate) fn render(options: &ServeOptions, info: &RunInfo) -> String {
    let config = serde_json::json!({
        "labels": info.labels,
        "names": options.label_names,
        "preview": options.preview != PreviewMode::Off,
        "stale_ms": options.stale_after.as_millis() as u64,
        "source": info.source,
        "classifier": info.classifier,
        "version": env!("CARGO_PKG_VERSION"),
    });
    // Inside <script>, `</script>` or `<!--` in a label must not end or change the script: JSON allows
    // `<` written as \u003c.
    let json = config.to_string().replace('<', "\\u003c");
    TEMPLATE.replacen(CONFIG_SLOT, &json, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_carries_its_settings() {
        assert_eq!(TEMPLATE.matches(CONFIG_SLOT).count(), 1);
        let mut options = ServeOptions::new("127.0.0.1:0".parse().unwrap());
        options
            .label_names
            .insert("happy".into(), "fröhlich</script><!--".into());
        let info = RunInfo {
            labels: vec!["happy".into(), "sad".into()],
            ..RunInfo::default()
        };
        let page = render(&options, &info);
        assert!(!page.contains(CONFIG_SLOT));
        assert!(
            page.contains(r#""names":{"happy":"fröhlich\u003c/script>\u003c!--"}"#),
            "{page}"
        );
        assert!(page.contains(r#""preview":false"#));
        // Nothing from elsewhere: no absolute URLs (but SVG's namespace name, never fetched), no
        // protocol-relative ones, no external resources.
        let page = page.replace("\"http://www.w3.org/2000/svg\"", "");
        for needle in [
            "http://",
            "https://",
            "src=\"//",
            "href=\"//",
            "@import",
            "url(",
        ] {
            assert!(!page.contains(needle), "the page refers to {needle}");
        }
    }
}
