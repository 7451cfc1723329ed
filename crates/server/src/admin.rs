//! Administrative actions, for `burrowd admin` and for embedding (`burrowd demo`).
//!
//! They open the database directly, so they work whether or not a server is running on the
//! same data directory (SQLite in WAL mode lets both write).

use std::fmt::Write as _;
use std::path::Path;

use crate::api::now_ms;
use crate::db::{AuditRow, Db, DbError};

/// Creates user `name` and returns its API token (`bu_...`). The token is not stored: this
/// is the only time it is seen.
pub async fn admin_add_user(data_dir: &Path, name: &str) -> Result<String, DbError> {
    let db = Db::open(data_dir).await?;
    let token = db.add_user(name, now_ms()).await;
    db.close().await;
    token
}

/// Creates workspace `name` owned by user `owner` and returns its agent token (`ba_...`),
/// seen only this once.
pub async fn admin_add_workspace(
    data_dir: &Path,
    name: &str,
    owner: &str,
) -> Result<String, DbError> {
    let db = Db::open(data_dir).await?;
    let token = db.add_workspace(name, owner, now_ms()).await;
    db.close().await;
    token
}

/// The newest `limit` audit rows, oldest first.
pub async fn admin_audit(data_dir: &Path, limit: u32) -> Result<Vec<AuditRow>, DbError> {
    let db = Db::open(data_dir).await?;
    let rows = db.audit_log(None, limit).await;
    db.close().await;
    rows
}

/// Formats Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn format_time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The audit log as an aligned text table with a header line.
pub fn format_audit_table(rows: &[AuditRow]) -> String {
    let header = [
        "ID",
        "TIME (UTC)",
        "USER",
        "WORKSPACE",
        "PORT",
        "SESSION",
        "STREAM",
        "PATH",
        "TO_WS",
        "TO_CLIENT",
        "OUTCOME",
        "REMOTE",
    ];
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                format_time_ms(r.at_ms),
                opt(&r.user),
                opt(&r.workspace),
                r.port.map_or_else(|| "-".into(), |p| p.to_string()),
                opt(&r.session_id),
                r.stream_id.map_or_else(|| "-".into(), |s| s.to_string()),
                r.path.clone(),
                r.bytes_to_workspace.to_string(),
                r.bytes_to_client.to_string(),
                r.outcome.clone(),
                opt(&r.remote_addr),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |fields: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (f, w)) in fields.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{f:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &cells {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_formatted_in_utc() {
        assert_eq!(format_time_ms(0), "1970-01-01 00:00:00");
        assert_eq!(format_time_ms(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn audit_table_has_header_and_one_line_per_row() {
        let row = AuditRow {
            id: 7,
            at_ms: 0,
            user: Some("alice".into()),
            workspace: None,
            port: Some(22),
            session_id: None,
            stream_id: None,
            started_at_ms: None,
            ended_at_ms: None,
            bytes_to_workspace: 10,
            bytes_to_client: 20,
            path: "relay".into(),
            outcome: "refused: forbidden".into(),
            remote_addr: None,
        };
        let table = format_audit_table(&[row]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID"));
        assert!(lines[1].contains("alice") && lines[1].contains("refused: forbidden"));
    }
}
