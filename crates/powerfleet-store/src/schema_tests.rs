//! Checks that the SQLite and PostgreSQL migrations define the same tables, columns and indexes.

use std::collections::BTreeMap;
use std::path::Path;

/// Tables with their columns in order, and index names, of every `.sql` file in `dir`.
fn schema_of(dir: &str) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no migrations in {}", dir.display());
    let sql: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    parse(&sql)
}

/// Parses `CREATE TABLE name (...)`, `ALTER TABLE name ADD [COLUMN] col` and `CREATE [UNIQUE]
/// INDEX name` loosely.
fn parse(sql: &str) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let sql: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut indexes = Vec::new();
    for stmt in sql.split(';') {
        let words: Vec<String> = stmt
            .split_whitespace()
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["create", "table", rest @ ..] => {
                let name_part = stmt[..stmt.find('(').expect("CREATE TABLE without (")].trim();
                let name = name_part
                    .split_whitespace()
                    .last()
                    .unwrap()
                    .to_ascii_lowercase();
                assert!(!rest.is_empty());
                let body = &stmt[stmt.find('(').unwrap() + 1..stmt.rfind(')').unwrap()];
                let columns = split_top_level(body)
                    .into_iter()
                    .filter_map(|item| {
                        let first = item.split_whitespace().next()?.to_ascii_lowercase();
                        let constraint = ["primary", "unique", "check", "constraint", "foreign"];
                        (!constraint.contains(&first.as_str())).then_some(first)
                    })
                    .collect();
                tables.insert(name, columns);
            }
            ["alter", "table", name, "add", rest @ ..] => {
                let col = match rest {
                    ["column", col, ..] => col,
                    [col, ..] => col,
                    [] => panic!("ALTER TABLE ADD without a column"),
                };
                tables
                    .entry(name.to_string())
                    .or_default()
                    .push(col.to_string());
            }
            ["create", "index", name, ..] | ["create", "unique", "index", name, ..] => {
                indexes.push(name.to_string());
            }
            _ => {}
        }
    }
    indexes.sort();
    (tables, indexes)
}

/// Splits at commas outside parentheses.
fn split_top_level(body: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in body.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&body[start..]);
    items
}

#[test]
fn sqlite_and_postgres_migrations_define_the_same_schema() {
    let (sqlite_tables, sqlite_indexes) = schema_of("sqlite");
    let (pg_tables, pg_indexes) = schema_of("postgres");
    assert_eq!(
        sqlite_tables, pg_tables,
        "tables and columns differ between the dialects"
    );
    assert_eq!(
        sqlite_indexes, pg_indexes,
        "indexes differ between the dialects"
    );
    // Every column a stored result binds, which includes job_id, batch_id, seed, log_p,
    // stats_json, result_json, latency_ms and the config columns.
    let job_results = &sqlite_tables["job_results"];
    for col in crate::record::RESULT_COLUMNS {
        assert!(
            job_results.iter().any(|c| c == col),
            "job_results lacks {col}"
        );
    }
    assert!(sqlite_tables["batch_aggregates"].contains(&"final_tokens".to_string()));
    assert!(sqlite_tables["submissions"].contains(&"scheduled".to_string()));
    assert!(sqlite_tables["submissions"].contains(&"request_json".to_string()));
    assert_eq!(
        sqlite_indexes,
        [
            "job_results_batch_id",
            "job_results_correlation_id",
            "job_results_label",
            "submissions_correlation_id",
            "submissions_label"
        ]
    );
}

#[test]
fn parser_sees_columns_constraints_and_alterations() {
    let (tables, indexes) = parse(
        "CREATE TABLE t (a TEXT NOT NULL, -- a, comment\n b NUMERIC(10, 2), \
         PRIMARY KEY (a, b), CHECK (b IN (1, 2)));\n\
         ALTER TABLE t ADD COLUMN c BIGINT; CREATE UNIQUE INDEX t_a ON t (a);",
    );
    assert_eq!(tables["t"], ["a", "b", "c"]);
    assert_eq!(indexes, ["t_a"]);
}
