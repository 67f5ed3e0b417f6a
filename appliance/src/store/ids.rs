//! Typed ids. A room id cannot be passed where a user id is expected, and a
//! sequence number is not a row id. On the wire and in SQLite each is the
//! plain integer it wraps (`serde(transparent)`, `ToSql`/`FromSql`).
//!
//! ```compile_fail
//! fn remove_member(_room: parvis::store::RoomId, _user: parvis::store::UserId) {}
//! let (room, user) = (parvis::store::RoomId(1), parvis::store::UserId(2));
//! remove_member(user, room); // the arguments swapped: does not compile
//! ```
//!
//! ```
//! fn remove_member(_room: parvis::store::RoomId, _user: parvis::store::UserId) {}
//! let (room, user) = (parvis::store::RoomId(1), parvis::store::UserId(2));
//! remove_member(room, user);
//! ```

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = i64)]
        pub struct $name(pub i64);

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                i64::column_result(value).map($name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

id!(
    /// User id (row id of `users`).
    UserId
);
id!(
    /// Room id (row id of `rooms`).
    RoomId
);
id!(
    /// Per-room event sequence number, assigned at commit. Sequences only
    /// grow; `next` is the one after.
    Seq
);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_integers_on_the_wire_and_in_sqlite() {
        assert_eq!(serde_json::to_string(&RoomId(7)).unwrap(), "7");
        assert_eq!(serde_json::from_str::<UserId>("42").unwrap(), UserId(42));
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let back: Seq = conn.query_row("SELECT ?1", [Seq(9)], |r| r.get(0)).unwrap();
        assert_eq!(back, Seq(9));
        assert_eq!(Seq(9).next(), Seq(10));
        assert_eq!("12".parse::<RoomId>().unwrap(), RoomId(12));
    }
}
