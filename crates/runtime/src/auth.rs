//! Bearer-token authentication of the HTTP API.
//!
//! A token file holds one token per line, `ROLE TOKEN`, with `#` comments
//! and blank lines ignored:
//!
//! ```text
//! # role   token (16 to 256 printable ASCII characters, no spaces)
//! read     3f1c0a9e8b7d6c5b4a39281706f5e4d3
//! submit   9a8b7c6d5e4f30211203f4e5d6c7b8a9
//! admin    0f1e2d3c4b5a69788796a5b4c3d2e1f0
//! ```
//!
//! Roles nest: `admin` may do what `submit` may, `submit` what `read` may.
//!
//! | request | role |
//! |---|---|
//! | `GET /v1/health`, `GET /v1/openapi.json` | none |
//! | other `GET` (`/v1/tasks/{id}`, `/v1/cluster`, `/v1/ring`, `/metrics`) | `read` |
//! | `POST /v1/tasks` | `submit` |
//! | `DELETE /v1/tasks/{id}` and anything else (`POST`/`DELETE /v1/ring/members/{node}`: ring changes) | `admin` |
//!
//! Presented tokens are compared in constant time (SHA-256 of both sides,
//! then `subtle`'s comparison, over every entry). Tokens never appear in a
//! log line, an error or a `Debug` output.

use crate::error::RuntimeError;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

/// Fewest characters in a token.
pub const TOKEN_CHARS_MIN: usize = 16;
/// Most characters in a token.
pub const TOKEN_CHARS_MAX: usize = 256;

/// What a token may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read tasks, the cluster and metrics.
    Read,
    /// Also submit tasks.
    Submit,
    /// Also cancel tasks and change membership.
    Admin,
}

impl Role {
    /// The role's name in a token file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "submit" => Some(Role::Submit),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The tokens a node accepts, each with its role.
#[derive(Clone)]
pub struct Tokens {
    /// SHA-256 of each token, with its role.
    entries: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} entries)", self.entries.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    /// Parses a token file's text (format in the module docs). Errors name
    /// the line, never the token.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<([u8; 32], Role)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!("line {n}: expected `ROLE TOKEN`"));
            };
            let role = Role::parse(role).ok_or_else(|| {
                format!("line {n}: unknown role {role:?} (read, submit or admin)")
            })?;
            let chars = token.chars().count();
            if !(TOKEN_CHARS_MIN..=TOKEN_CHARS_MAX).contains(&chars) {
                return Err(format!(
                    "line {n}: a token has {TOKEN_CHARS_MIN} to {TOKEN_CHARS_MAX} characters"
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("line {n}: a token is printable ASCII"));
            }
            let d = digest(token.as_bytes());
            if entries.iter().any(|(e, _)| *e == d) {
                return Err(format!("line {n}: this token appears twice"));
            }
            entries.push((d, role));
        }
        if entries.is_empty() {
            return Err("no tokens".into());
        }
        Ok(Tokens { entries })
    }

    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Tokens, RuntimeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::Io {
            what: format!("cannot read token file {}", path.display()),
            source,
        })?;
        Tokens::parse(&text)
            .map_err(|e| RuntimeError::Config(format!("token file {}: {e}", path.display())))
    }

    /// The role of `presented`, if it is one of the tokens. Takes the same
    /// time whichever entry (if any) matches.
    pub fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let d = digest(presented);
        let mut found: Option<Role> = None;
        for (e, role) in &self.entries {
            if bool::from(e.ct_eq(&d)) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No usable `Authorization: Bearer` header, or an unknown token (401).
    Unauthenticated,
    /// A valid token whose role is too low (403).
    Forbidden {
        /// What the request needs.
        needed: Role,
        /// What the token has.
        has: Role,
    },
}

/// The role a request needs, or `None` for the public routes.
pub fn role_needed(method: &axum::http::Method, path: &str) -> Option<Role> {
    use axum::http::Method;
    if *method == Method::GET && matches!(path, "/v1/health" | "/v1/openapi.json") {
        return None;
    }
    Some(match *method {
        Method::GET | Method::HEAD => Role::Read,
        Method::POST if path == "/v1/tasks" => Role::Submit,
        _ => Role::Admin,
    })
}

/// Checks an `Authorization` header value against `tokens` for `needed`.
pub fn check(tokens: &Tokens, authorization: Option<&[u8]>, needed: Role) -> Result<Role, Refusal> {
    let presented = authorization
        .and_then(|h| h.strip_prefix(b"Bearer "))
        .map(|t| t.trim_ascii())
        .ok_or(Refusal::Unauthenticated)?;
    let has = tokens.role_of(presented).ok_or(Refusal::Unauthenticated)?;
    if has < needed {
        return Err(Refusal::Forbidden { needed, has });
    }
    Ok(has)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    const FILE: &str = "# comment\n\nread   rrrrrrrrrrrrrrrr\nsubmit ssssssssssssssss\n  admin aaaaaaaaaaaaaaaa  \n";

    #[test]
    fn a_token_file_parses_and_roles_nest() {
        let t = Tokens::parse(FILE).unwrap();
        assert_eq!(t.role_of(b"rrrrrrrrrrrrrrrr"), Some(Role::Read));
        assert_eq!(t.role_of(b"aaaaaaaaaaaaaaaa"), Some(Role::Admin));
        assert_eq!(t.role_of(b"aaaaaaaaaaaaaaa"), None);
        assert_eq!(t.role_of(b""), None);
        let bearer = |s: &str| format!("Bearer {s}").into_bytes();
        assert_eq!(
            check(&t, Some(&bearer("ssssssssssssssss")), Role::Read),
            Ok(Role::Submit)
        );
        assert_eq!(
            check(&t, Some(&bearer("ssssssssssssssss")), Role::Admin),
            Err(Refusal::Forbidden {
                needed: Role::Admin,
                has: Role::Submit
            })
        );
        assert_eq!(
            check(&t, Some(&bearer("nope-nope-nope-nope")), Role::Read),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            check(&t, Some(b"Basic cnJycg=="), Role::Read),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(check(&t, None, Role::Read), Err(Refusal::Unauthenticated));
        assert!(!format!("{t:?}").contains("rrrr"));
    }

    #[test]
    fn bad_token_files_name_the_line_but_never_the_token() {
        for (text, says) in [
            ("read\n", "line 1"),
            ("root abcdefghijklmnopq\n", "unknown role"),
            ("read short\n", "16 to 256"),
            ("read abcdefghijklmnopq\nadmin abcdefghijklmnopq\n", "twice"),
            ("# only a comment\n", "no tokens"),
            ("read abcdefghijklmnopq extra\n", "ROLE TOKEN"),
        ] {
            let e = Tokens::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(!e.contains("abcdefghijklmnopq"), "{e} leaks a token");
        }
    }

    #[test]
    fn routes_need_the_documented_roles() {
        assert_eq!(role_needed(&Method::GET, "/v1/health"), None);
        assert_eq!(role_needed(&Method::GET, "/v1/openapi.json"), None);
        assert_eq!(role_needed(&Method::GET, "/v1/tasks/ab"), Some(Role::Read));
        assert_eq!(role_needed(&Method::GET, "/metrics"), Some(Role::Read));
        assert_eq!(role_needed(&Method::POST, "/v1/tasks"), Some(Role::Submit));
        assert_eq!(
            role_needed(&Method::DELETE, "/v1/tasks/ab"),
            Some(Role::Admin)
        );
        assert_eq!(role_needed(&Method::POST, "/v1/members"), Some(Role::Admin));
        assert_eq!(role_needed(&Method::GET, "/v1/ring"), Some(Role::Read));
        assert_eq!(
            role_needed(&Method::POST, "/v1/ring/members/4"),
            Some(Role::Admin)
        );
        assert_eq!(
            role_needed(&Method::DELETE, "/v1/ring/members/4"),
            Some(Role::Admin)
        );
        assert_eq!(role_needed(&Method::GET, "/v1/drain"), Some(Role::Read));
        assert_eq!(role_needed(&Method::POST, "/v1/drain"), Some(Role::Admin));
    }
}
