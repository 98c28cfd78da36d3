//! HAProxy's runtime-API tables, parsed by column name: `show stat` (CSV) and
//! `show servers state` (space separated). Column positions change between HAProxy versions;
//! names do not.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Why an answer is not the table asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The answer has no `# ` header line: its first line (e.g. "Permission denied.").
    NotATable(String),
    /// The table lacks a column the caller needs.
    MissingColumn(String),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::NotATable(first_line) => write!(
                f,
                "HAProxy answered {first_line:?} instead of a table; check the socket's access \
                 level and the command"
            ),
            TableError::MissingColumn(name) => write!(
                f,
                "HAProxy's table has no `{name}` column; this HAProxy version is not supported"
            ),
        }
    }
}

impl core::error::Error for TableError {}

/// A table of the runtime API: a header of column names and rows of fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Parses `show stat`: a `# pxname,svname,...` header, then comma-separated rows.
    pub fn show_stat(answer: &str) -> Result<Table, TableError> {
        Table::parse(answer, |line| line.split(',').map(str::to_owned).collect())
    }

    /// Parses `show servers state`: a version line, a `# be_id be_name ...` header, then
    /// space-separated rows.
    pub fn servers_state(answer: &str) -> Result<Table, TableError> {
        Table::parse(answer, |line| {
            line.split_whitespace().map(str::to_owned).collect()
        })
    }

    fn parse(answer: &str, split: impl Fn(&str) -> Vec<String>) -> Result<Table, TableError> {
        let mut lines = answer.lines().skip_while(|line| !line.starts_with('#'));
        let header = lines
            .next()
            .and_then(|line| line.strip_prefix("# "))
            .ok_or_else(|| {
                TableError::NotATable(answer.lines().next().unwrap_or("").trim().to_owned())
            })?;
        Ok(Table {
            columns: split(header),
            rows: lines
                .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
                .map(split)
                .collect(),
        })
    }

    /// The position of column `name`, or an error naming it.
    pub fn column(&self, name: &str) -> Result<usize, TableError> {
        self.columns
            .iter()
            .position(|column| column == name)
            .ok_or_else(|| TableError::MissingColumn(name.to_owned()))
    }

    /// The column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Every row; a field past a row's end reads as empty.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|fields| Row {
            table: self,
            fields,
        })
    }
}

/// One row of a [`Table`].
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    table: &'a Table,
    fields: &'a [String],
}

impl<'a> Row<'a> {
    /// The field at `index` (from [`Table::column`]), empty if the row is shorter.
    pub fn at(&self, index: usize) -> &'a str {
        self.fields.get(index).map_or("", String::as_str)
    }

    /// The field in column `name`, empty if there is no such column.
    pub fn get(&self, name: &str) -> &'a str {
        self.table.column(name).map_or("", |index| self.at(index))
    }

    /// Every field with its column name.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let fields = self.fields;
        self.table
            .columns
            .iter()
            .enumerate()
            .map(move |(i, name)| (name.as_str(), fields.get(i).map_or("", String::as_str)))
    }
}

/// One server as `show servers state` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    /// `srv_addr`: the IP address HAProxy connects to.
    pub addr: String,
    /// `srv_port`.
    pub port: u16,
    /// `srv_op_state`: 0 stopped (DOWN), 1 starting, 2 running (UP), 3 stopping.
    pub op_state: u8,
    /// `srv_admin_state`: 0 ready; other values are maintenance or drain flags.
    pub admin_state: u32,
}

impl ServerState {
    /// Finds `backend/server` in the answer to `show servers state`; `Ok(None)` if the table
    /// has no such server.
    pub fn find(answer: &str, backend: &str, server: &str) -> Result<Option<Self>, TableError> {
        let table = Table::servers_state(answer)?;
        let (be_name, srv_name) = (table.column("be_name")?, table.column("srv_name")?);
        let (addr, port) = (table.column("srv_addr")?, table.column("srv_port")?);
        let (op_state, admin_state) = (
            table.column("srv_op_state")?,
            table.column("srv_admin_state")?,
        );
        let found = table
            .rows()
            .find(|row| row.at(be_name) == backend && row.at(srv_name) == server);
        Ok(found.map(|row| ServerState {
            addr: row.at(addr).to_owned(),
            port: row.at(port).parse().unwrap_or(0),
            op_state: row.at(op_state).parse().unwrap_or(0),
            admin_state: row.at(admin_state).parse().unwrap_or(0),
        }))
    }

    /// Running and neither in maintenance nor draining: it takes traffic.
    pub fn is_up(&self) -> bool {
        self.op_state == 2 && self.admin_state == 0
    }

    /// The IP address, if HAProxy reports one.
    pub fn ip(&self) -> Option<core::net::IpAddr> {
        self.addr.parse().ok()
    }

    /// "UP", "DOWN", ... in HAProxy's words.
    pub fn describe(&self) -> String {
        let op = match self.op_state {
            0 => "DOWN",
            1 => "starting",
            2 => "UP",
            3 => "stopping",
            _ => "unknown state",
        };
        match self.admin_state {
            0 => op.to_owned(),
            admin => format!("{op}, admin state {admin:#x} (maintenance or drain)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state \
        srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
        srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id \
        srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr \
        srv_agent_addr srv_agent_port\n\
        4 api 1 api-main 127.0.0.1 2 0 1 1 12 15 3 4 6 0 0 0 - 43210 - 0 0 - - 0\n\
        4 api 2 api-fallback 127.0.0.1 2 0 1 1 12 1 0 1 0 0 0 0 - 41000 - 0 0 - - 0\n\n";

    #[test]
    fn reads_a_server_from_show_servers_state() {
        let state = ServerState::find(STATE, "api", "api-main")
            .unwrap()
            .unwrap();
        assert_eq!(
            state,
            ServerState {
                addr: "127.0.0.1".to_owned(),
                port: 43210,
                op_state: 2,
                admin_state: 0
            }
        );
        assert!(state.is_up());
        assert_eq!(state.describe(), "UP");
        assert_eq!(ServerState::find(STATE, "static", "api-main"), Ok(None));
        assert!(ServerState::find("Unknown command.\n", "api", "api-main").is_err());
    }

    #[test]
    fn a_drained_or_maintained_server_is_not_up() {
        let state = |op_state, admin_state| ServerState {
            addr: "127.0.0.1".to_owned(),
            port: 1,
            op_state,
            admin_state,
        };
        assert!(!state(2, 0x8).is_up());
        assert!(!state(2, 0x1).is_up());
        assert!(!state(0, 0).is_up());
        assert_eq!(state(0, 0).describe(), "DOWN");
    }

    #[test]
    fn show_stat_columns_are_found_by_name() {
        let table =
            Table::show_stat("# svname,pxname,status\nweb,FRONTEND\napi-main,api,UP\n").unwrap();
        let rows: Vec<Row<'_>> = table.rows().collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].get("pxname"), "api");
        assert_eq!(rows[1].get("status"), "UP");
        assert_eq!(rows[0].get("status"), "", "a short row reads as empty");
        assert_eq!(
            table.column("scur"),
            Err(TableError::MissingColumn("scur".to_owned()))
        );
    }

    #[test]
    fn an_answer_without_a_header_is_not_a_table() {
        let error = Table::show_stat("Permission denied.\n").unwrap_err();
        assert_eq!(
            error,
            TableError::NotATable("Permission denied.".to_owned())
        );
        assert!(error.to_string().contains("Permission denied."));
        assert!(Table::show_stat("").is_err());
    }
}
