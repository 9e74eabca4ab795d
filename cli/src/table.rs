//! Aligned columns for people (`--output table`).

pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        // Device text may hold anything: keep a row on one line.
        self.rows.push(
            cells
                .into_iter()
                .map(|c| c.replace(['\n', '\r', '\t'], " "))
                .collect(),
        );
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// The DEVICE cell of a job or session: the device's name (`device_name`), or its id when the
/// device has no name any more (deleted) or the API is older than the field.
pub fn device(item: &serde_json::Value) -> String {
    match item["device_name"].as_str() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => item["device_id"].as_str().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn columns_line_up() {
        let mut table = Table::new(&["ID", "NAME"]);
        table.row(vec!["1".into(), "web\n1".into()]);
        table.row(vec!["22".into(), "db".into()]);
        assert_eq!(table.render(), "ID  NAME\n1   web 1\n22  db\n");
    }

    #[test]
    fn a_device_is_named_or_else_identified() {
        let id = "0190f0f0-0000-7000-8000-000000000000";
        let named = serde_json::json!({ "device_id": id, "device_name": "web-1" });
        assert_eq!(super::device(&named), "web-1");
        let deleted = serde_json::json!({ "device_id": id, "device_name": null });
        assert_eq!(super::device(&deleted), id);
        let older_api = serde_json::json!({ "device_id": id });
        assert_eq!(super::device(&older_api), id);
    }
}
