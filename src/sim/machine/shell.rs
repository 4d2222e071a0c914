//! A small POSIX shell: what cloud-init's `runcmd` and `bootcmd` scripts and the scripts
//! they call are written in.
//!
//! Owns the lexer ([`lex`]), the parser ([`parse`]) and the executor ([`Shell`]). Supported:
//! words with single and double quotes and backslashes, `$NAME` and `${NAME}` (with `set -u`),
//! `$?`, `;`, `&&`, `||`, `|`, `!`, newlines and `\` continuations, comments, redirections
//! (`>`, `>>`, `<`, `2>...` ignored) and here-documents, `set -e` with POSIX's exceptions
//! (every command of an AND-OR list but the last, negated pipelines).
//!
//! Not interpreted, and recorded as such (then treated as succeeding, with no effect):
//! command substitution, `${NAME:-word}` and other parameter operators, compound commands
//! (`if`, `for`, `while`, `until`, `case`, `{ }`, subshells), function definitions, globbing,
//! and every command `commands` does not know.

use std::collections::BTreeMap;

use super::{
    cluster::Fabric,
    host::{Host, StepStatus},
};

/// One piece of a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    /// Literal text, quotes and escapes already removed.
    Lit(String),
    /// `$NAME`, `${NAME}`, `$?`.
    Var(String),
    /// Something the simulator does not expand: command substitution, parameter operators.
    Opaque(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Word {
    pub segs: Vec<Seg>,
    /// Some part of it was quoted (so it is never an IO number or a reserved word).
    pub quoted: bool,
}

impl Word {
    /// The word's text when it has no expansion.
    pub fn literal(&self) -> Option<String> {
        let mut out = String::new();
        for seg in &self.segs {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                _ => return None,
            }
        }
        Some(out)
    }

    fn push_lit(&mut self, c: char) {
        if let Some(Seg::Lit(s)) = self.segs.last_mut() {
            s.push(c);
        } else {
            self.segs.push(Seg::Lit(c.to_string()));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    And,
    Or,
    Semi,
    Amp,
    Pipe,
    LParen,
    RParen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RedirKind {
    Out { append: bool },
    In,
    Dup,
    HereDoc { body: String, expand: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    Word(Word),
    Op(Op),
    Redir { fd: Option<u32>, kind: RedirKind },
    Newline,
}

/// A token and the byte range of the source it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

/// Splits a script into tokens.
///
/// # Errors
///
/// An unterminated quote or here-document, as `sh` reports a syntax error.
pub(super) fn lex(source: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<(usize, char)> = source.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|(_, c)| *c);
    let pos = |i: usize| chars.get(i).map_or(source.len(), |(p, _)| *p);
    let mut tokens: Vec<Token> = Vec::new();
    // Here-documents waiting for the end of the line: token index, delimiter, strip tabs.
    let mut pending: Vec<(usize, String, bool)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        match c {
            ' ' | '\t' | '\r' => i += 1,
            '\\' if at(i + 1) == Some('\n') => i += 2,
            '#' => {
                while i < chars.len() && chars[i].1 != '\n' {
                    i += 1;
                }
            }
            '\n' => {
                tokens.push(Token {
                    tok: Tok::Newline,
                    start: pos(i),
                    end: pos(i + 1),
                });
                i += 1;
                for (index, delimiter, strip) in std::mem::take(&mut pending) {
                    let mut body = String::new();
                    let mut found = false;
                    while i < chars.len() {
                        let line_start = i;
                        while i < chars.len() && chars[i].1 != '\n' {
                            i += 1;
                        }
                        let mut line = &source[pos(line_start)..pos(i)];
                        if i < chars.len() {
                            i += 1;
                        }
                        if strip {
                            line = line.trim_start_matches('\t');
                        }
                        if line == delimiter {
                            found = true;
                            break;
                        }
                        body.push_str(line);
                        body.push('\n');
                    }
                    if !found {
                        return Err(format!(
                            "here-document delimited by end-of-file (wanted {delimiter:?})"
                        ));
                    }
                    if let Tok::Redir {
                        kind: RedirKind::HereDoc { body: b, .. },
                        ..
                    } = &mut tokens[index].tok
                    {
                        *b = body;
                    }
                }
            }
            '&' | '|' | ';' | '(' | ')' => {
                let two = at(i + 1);
                let (op, len) = match (c, two) {
                    ('&', Some('&')) => (Op::And, 2),
                    ('|', Some('|')) => (Op::Or, 2),
                    (';', Some(';')) => (Op::Semi, 2),
                    ('&', _) => (Op::Amp, 1),
                    ('|', _) => (Op::Pipe, 1),
                    (';', _) => (Op::Semi, 1),
                    ('(', _) => (Op::LParen, 1),
                    _ => (Op::RParen, 1),
                };
                tokens.push(Token {
                    tok: Tok::Op(op),
                    start: pos(i),
                    end: pos(i + len),
                });
                i += len;
            }
            '<' | '>' => {
                let start = i;
                let (kind, len) = redirection(c, at(i + 1), at(i + 2));
                i += len;
                if let RedirKind::HereDoc { .. } = kind {
                    let strip = len == 3;
                    while matches!(at(i), Some(' ' | '\t')) {
                        i += 1;
                    }
                    let (word, next) = lex_word(&chars, i, source)?;
                    let delimiter = word.segs.iter().fold(String::new(), |mut acc, s| {
                        match s {
                            Seg::Lit(t) => acc.push_str(t),
                            Seg::Var(v) => {
                                acc.push('$');
                                acc.push_str(v);
                            }
                            Seg::Opaque(o) => acc.push_str(o),
                        }
                        acc
                    });
                    i = next;
                    pending.push((tokens.len(), delimiter, strip));
                    tokens.push(Token {
                        tok: Tok::Redir {
                            fd: None,
                            kind: RedirKind::HereDoc {
                                body: String::new(),
                                expand: !word.quoted,
                            },
                        },
                        start: pos(start),
                        end: pos(i),
                    });
                } else {
                    tokens.push(Token {
                        tok: Tok::Redir { fd: None, kind },
                        start: pos(start),
                        end: pos(i),
                    });
                }
            }
            _ => {
                let start = i;
                let (word, next) = lex_word(&chars, i, source)?;
                i = next;
                // An unquoted number right before a redirection is its file descriptor.
                if let (Some(text), Some(r @ ('<' | '>'))) = (word.literal(), at(i))
                    && !word.quoted
                    && !text.is_empty()
                    && text.bytes().all(|b| b.is_ascii_digit())
                {
                    let (kind, len) = redirection(r, at(i + 1), at(i + 2));
                    let fd = text.parse().ok();
                    if !matches!(kind, RedirKind::HereDoc { .. }) {
                        i += len;
                        tokens.push(Token {
                            tok: Tok::Redir { fd, kind },
                            start: pos(start),
                            end: pos(i),
                        });
                        continue;
                    }
                }
                tokens.push(Token {
                    tok: Tok::Word(word),
                    start: pos(start),
                    end: pos(i),
                });
            }
        }
    }
    if let Some((_, delimiter, _)) = pending.first() {
        return Err(format!(
            "here-document delimited by end-of-file (wanted {delimiter:?})"
        ));
    }
    Ok(tokens)
}

fn redirection(c: char, next: Option<char>, third: Option<char>) -> (RedirKind, usize) {
    match (c, next, third) {
        ('<', Some('<'), Some('-')) => (
            RedirKind::HereDoc {
                body: String::new(),
                expand: true,
            },
            3,
        ),
        ('<', Some('<'), _) => (
            RedirKind::HereDoc {
                body: String::new(),
                expand: true,
            },
            2,
        ),
        ('<', Some('&'), _) | ('>', Some('&'), _) => (RedirKind::Dup, 2),
        ('<', Some('>'), _) => (RedirKind::In, 2),
        ('<', _, _) => (RedirKind::In, 1),
        ('>', Some('>'), _) => (RedirKind::Out { append: true }, 2),
        ('>', Some('|'), _) => (RedirKind::Out { append: false }, 2),
        _ => (RedirKind::Out { append: false }, 1),
    }
}

fn lex_word(chars: &[(usize, char)], mut i: usize, source: &str) -> Result<(Word, usize), String> {
    let at = |i: usize| chars.get(i).map(|(_, c)| *c);
    let mut word = Word::default();
    while let Some(c) = at(i) {
        match c {
            ' ' | '\t' | '\r' | '\n' | '&' | '|' | ';' | '(' | ')' | '<' | '>' => break,
            '\\' => {
                match at(i + 1) {
                    Some('\n') => {}
                    Some(next) => {
                        word.push_lit(next);
                        word.quoted = true;
                    }
                    None => word.push_lit('\\'),
                }
                i += 2;
            }
            '\'' => {
                word.quoted = true;
                i += 1;
                let mut lit = String::new();
                loop {
                    match at(i) {
                        Some('\'') => break,
                        Some(ch) => lit.push(ch),
                        None => return Err("unterminated quoted string".to_owned()),
                    }
                    i += 1;
                }
                i += 1;
                for ch in lit.chars() {
                    word.push_lit(ch);
                }
                if lit.is_empty() {
                    word.segs.push(Seg::Lit(String::new()));
                }
            }
            '"' => {
                word.quoted = true;
                i += 1;
                let mut empty = true;
                loop {
                    match at(i) {
                        Some('"') => break,
                        Some('\\') => {
                            match at(i + 1) {
                                Some(ch @ ('$' | '`' | '"' | '\\')) => word.push_lit(ch),
                                Some('\n') => {}
                                Some(ch) => {
                                    word.push_lit('\\');
                                    word.push_lit(ch);
                                }
                                None => return Err("unterminated quoted string".to_owned()),
                            }
                            i += 2;
                        }
                        Some('$') => i = dollar(chars, i, source, &mut word)?,
                        Some('`') => i = backquote(chars, i, source, &mut word)?,
                        Some(ch) => {
                            word.push_lit(ch);
                            i += 1;
                        }
                        None => return Err("unterminated quoted string".to_owned()),
                    }
                    empty = false;
                }
                i += 1;
                if empty {
                    word.segs.push(Seg::Lit(String::new()));
                }
            }
            '$' => i = dollar(chars, i, source, &mut word)?,
            '`' => i = backquote(chars, i, source, &mut word)?,
            _ => {
                word.push_lit(c);
                i += 1;
            }
        }
    }
    Ok((word, i))
}

fn span(chars: &[(usize, char)], source: &str, from: usize, to: usize) -> String {
    let pos = |i: usize| chars.get(i).map_or(source.len(), |(p, _)| *p);
    source[pos(from)..pos(to)].to_owned()
}

/// Reads `$...` at `i`; returns the index after it.
fn dollar(
    chars: &[(usize, char)],
    i: usize,
    source: &str,
    word: &mut Word,
) -> Result<usize, String> {
    let at = |i: usize| chars.get(i).map(|(_, c)| *c);
    match at(i + 1) {
        Some('(') => {
            let mut depth = 0;
            let mut j = i + 1;
            loop {
                match at(j) {
                    Some('(') => depth += 1,
                    Some(')') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    None => return Err("unterminated command substitution".to_owned()),
                    _ => {}
                }
                j += 1;
            }
            word.segs.push(Seg::Opaque(span(chars, source, i, j + 1)));
            Ok(j + 1)
        }
        Some('{') => {
            let mut j = i + 2;
            while at(j).is_some_and(|c| c != '}') {
                j += 1;
            }
            if at(j).is_none() {
                return Err("bad substitution".to_owned());
            }
            let inner = span(chars, source, i + 2, j);
            let simple = !inner.is_empty()
                && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !inner.starts_with(|c: char| c.is_ascii_digit());
            if simple {
                word.segs.push(Seg::Var(inner));
            } else {
                word.segs.push(Seg::Opaque(span(chars, source, i, j + 1)));
            }
            Ok(j + 1)
        }
        Some('?') => {
            word.segs.push(Seg::Var("?".to_owned()));
            Ok(i + 2)
        }
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            let mut j = i + 1;
            while at(j).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                j += 1;
            }
            word.segs.push(Seg::Var(span(chars, source, i + 1, j)));
            Ok(j)
        }
        Some(c) if c.is_ascii_digit() || "$#@*!-".contains(c) => {
            word.segs.push(Seg::Opaque(span(chars, source, i, i + 2)));
            Ok(i + 2)
        }
        _ => {
            word.push_lit('$');
            Ok(i + 1)
        }
    }
}

fn backquote(
    chars: &[(usize, char)],
    i: usize,
    source: &str,
    word: &mut Word,
) -> Result<usize, String> {
    let mut j = i + 1;
    loop {
        match chars.get(j).map(|(_, c)| *c) {
            Some('`') => break,
            Some('\\') => j += 2,
            Some(_) => j += 1,
            None => return Err("unterminated command substitution".to_owned()),
        }
    }
    word.segs.push(Seg::Opaque(span(chars, source, i, j + 1)));
    Ok(j + 1)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Redirect {
    pub fd: Option<u32>,
    pub kind: RedirKind,
    /// The file, for `>`, `>>`, `<` and `>&`.
    pub target: Option<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Command {
    pub assigns: Vec<(String, Word)>,
    pub words: Vec<Word>,
    pub redirects: Vec<Redirect>,
    /// The source text, for the step log.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pipeline {
    pub negated: bool,
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AndOr {
    pub first: Pipeline,
    /// `true` for `&&`, `false` for `||`.
    pub rest: Vec<(bool, Pipeline)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    List(AndOr),
    /// A construct the simulator does not interpret, with its source text.
    Unsupported {
        text: String,
        why: String,
    },
}

const OPENERS: &[&str] = &["if", "for", "while", "until", "case", "{"];
const CLOSERS: &[&str] = &["fi", "done", "esac", "}"];
const LEADS: &[&str] = &[
    "then", "do", "else", "elif", "if", "while", "until", "{", "!",
];

/// Parses tokens into AND-OR lists.
///
/// # Errors
///
/// A syntax error (`&&` with nothing after it, a redirection without a file, an unmatched
/// `fi`), as `sh` would refuse the script.
pub(super) fn parse(tokens: &[Token], source: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].tok {
            Tok::Newline | Tok::Op(Op::Semi) => {
                i += 1;
                continue;
            }
            Tok::Op(op @ (Op::And | Op::Or | Op::Pipe | Op::Amp | Op::RParen)) => {
                return Err(format!("syntax error: unexpected {op:?}"));
            }
            _ => {}
        }
        if starts_compound(tokens, i) {
            let end = compound_end(tokens, i)?;
            let text = source[tokens[i].start..tokens[end - 1].end].to_owned();
            items.push(Item::Unsupported {
                text,
                why: "compound commands and function definitions are not interpreted".to_owned(),
            });
            i = end;
            continue;
        }
        let (list, next) = parse_and_or(tokens, i, source)?;
        items.push(match list {
            Ok(list) => Item::List(list),
            Err(why) => Item::Unsupported {
                text: source[tokens[i].start..tokens[next - 1].end].to_owned(),
                why,
            },
        });
        i = next;
        if matches!(tokens.get(i).map(|t| &t.tok), Some(Tok::Op(Op::Amp))) {
            i += 1;
        }
    }
    Ok(items)
}

fn word_text(tokens: &[Token], i: usize) -> Option<String> {
    match tokens.get(i).map(|t| &t.tok) {
        Some(Tok::Word(w)) if !w.quoted => w.literal(),
        _ => None,
    }
}

fn starts_compound(tokens: &[Token], i: usize) -> bool {
    if matches!(tokens[i].tok, Tok::Op(Op::LParen)) {
        return true;
    }
    let Some(text) = word_text(tokens, i) else {
        return false;
    };
    OPENERS.contains(&text.as_str())
        || text == "function"
        || matches!(tokens.get(i + 1).map(|t| &t.tok), Some(Tok::Op(Op::LParen)))
}

/// The token index after a compound command (and what follows it up to the next separator).
fn compound_end(tokens: &[Token], start: usize) -> Result<usize, String> {
    let mut depth = 0i32;
    let mut parens = 0i32;
    let mut command_position = true;
    let mut i = start;
    while i < tokens.len() {
        match &tokens[i].tok {
            Tok::Op(Op::LParen) => parens += 1,
            Tok::Op(Op::RParen) => parens -= 1,
            Tok::Word(_) => {
                if let Some(text) = word_text(tokens, i) {
                    if command_position && OPENERS.contains(&text.as_str()) || text == "case" {
                        depth += 1;
                    } else if command_position && CLOSERS.contains(&text.as_str()) || text == "esac"
                    {
                        depth -= 1;
                    }
                    command_position = LEADS.contains(&text.as_str());
                } else {
                    command_position = false;
                }
            }
            Tok::Newline | Tok::Op(_) => {
                if depth <= 0 && parens <= 0 && i > start {
                    return Ok(i);
                }
                command_position = true;
            }
            Tok::Redir { .. } => command_position = false,
        }
        if depth < 0 || parens < 0 {
            return Err("syntax error: unmatched closing keyword".to_owned());
        }
        i += 1;
        if depth == 0 && parens == 0 && i > start + 1 {
            // Stop after the closer, at the next separator.
            if matches!(
                tokens.get(i).map(|t| &t.tok),
                None | Some(Tok::Newline | Tok::Op(Op::Semi))
            ) {
                return Ok(i);
            }
        }
    }
    if depth > 0 || parens > 0 {
        return Err(
            "syntax error: end of file unexpected (expecting a closing keyword)".to_owned(),
        );
    }
    Ok(i)
}

type Parsed<T> = Result<(Result<T, String>, usize), String>;

fn parse_and_or(tokens: &[Token], mut i: usize, source: &str) -> Parsed<AndOr> {
    let (first, next) = parse_pipeline(tokens, i, source)?;
    i = next;
    let mut rest = Vec::new();
    let mut unsupported = first.as_ref().err().cloned();
    while let Some(Tok::Op(op @ (Op::And | Op::Or))) = tokens.get(i).map(|t| &t.tok) {
        let and = *op == Op::And;
        i += 1;
        while matches!(tokens.get(i).map(|t| &t.tok), Some(Tok::Newline)) {
            i += 1;
        }
        if i >= tokens.len() {
            return Err("syntax error: end of file unexpected".to_owned());
        }
        if starts_compound(tokens, i) {
            let end = compound_end(tokens, i)?;
            unsupported.get_or_insert_with(|| {
                "compound commands and function definitions are not interpreted".to_owned()
            });
            i = end;
            continue;
        }
        let (pipeline, next) = parse_pipeline(tokens, i, source)?;
        i = next;
        match pipeline {
            Ok(p) => rest.push((and, p)),
            Err(why) => {
                unsupported.get_or_insert(why);
            }
        }
    }
    let list = match (unsupported, first) {
        (None, Ok(first)) => Ok(AndOr { first, rest }),
        (Some(why), _) | (None, Err(why)) => Err(why),
    };
    Ok((list, i))
}

fn parse_pipeline(tokens: &[Token], mut i: usize, source: &str) -> Parsed<Pipeline> {
    let mut negated = false;
    if word_text(tokens, i).as_deref() == Some("!") {
        negated = true;
        i += 1;
    }
    let mut commands = Vec::new();
    let mut unsupported = None;
    loop {
        if i < tokens.len() && starts_compound(tokens, i) {
            let end = compound_end(tokens, i)?;
            unsupported = Some("compound commands in a pipeline are not interpreted".to_owned());
            i = end;
        } else {
            let (command, next) = parse_command(tokens, i, source)?;
            commands.push(command);
            i = next;
        }
        if matches!(tokens.get(i).map(|t| &t.tok), Some(Tok::Op(Op::Pipe))) {
            i += 1;
            while matches!(tokens.get(i).map(|t| &t.tok), Some(Tok::Newline)) {
                i += 1;
            }
            continue;
        }
        break;
    }
    Ok((
        match unsupported {
            Some(why) => Err(why),
            None => Ok(Pipeline { negated, commands }),
        },
        i,
    ))
}

fn parse_command(tokens: &[Token], mut i: usize, source: &str) -> Result<(Command, usize), String> {
    let start = i;
    let mut command = Command {
        assigns: Vec::new(),
        words: Vec::new(),
        redirects: Vec::new(),
        text: String::new(),
    };
    while let Some(token) = tokens.get(i) {
        match &token.tok {
            Tok::Word(word) => {
                if command.words.is_empty()
                    && let Some((name, value)) = assignment(word)
                {
                    command.assigns.push((name, value));
                    i += 1;
                    continue;
                }
                command.words.push(word.clone());
                i += 1;
            }
            Tok::Redir { fd, kind } => {
                let target = match kind {
                    RedirKind::HereDoc { .. } => None,
                    _ => match tokens.get(i + 1).map(|t| &t.tok) {
                        Some(Tok::Word(w)) => {
                            i += 1;
                            Some(w.clone())
                        }
                        _ => return Err("syntax error: redirection unexpected".to_owned()),
                    },
                };
                command.redirects.push(Redirect {
                    fd: *fd,
                    kind: kind.clone(),
                    target,
                });
                i += 1;
            }
            Tok::Newline | Tok::Op(_) => break,
        }
    }
    if i == start {
        return Err("syntax error: a command was expected".to_owned());
    }
    command.text = source[tokens[start].start..tokens[i - 1].end].to_owned();
    Ok((command, i))
}

/// `NAME=value` at the start of a command.
fn assignment(word: &Word) -> Option<(String, Word)> {
    let Some(Seg::Lit(first)) = word.segs.first() else {
        return None;
    };
    let (name, value) = first.split_once('=')?;
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return None;
    }
    let mut rest = Word {
        segs: Vec::new(),
        quoted: word.quoted,
    };
    if !value.is_empty() {
        rest.segs.push(Seg::Lit(value.to_owned()));
    }
    rest.segs.extend(word.segs[1..].iter().cloned());
    Some((name.to_owned(), rest))
}

/// The shell's verdict on a command: its status, what it wrote, and the step to record.
pub(super) struct Out {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub step: StepStatus,
}

impl Out {
    pub fn ok() -> Self {
        Self {
            status: 0,
            stdout: Vec::new(),
            step: StepStatus::Ran { note: None },
        }
    }

    pub fn note(note: impl Into<String>) -> Self {
        Self {
            step: StepStatus::Ran {
                note: Some(note.into()),
            },
            ..Self::ok()
        }
    }

    pub fn stdout(stdout: Vec<u8>) -> Self {
        Self {
            stdout,
            ..Self::ok()
        }
    }

    pub fn fail(status: i32, reason: impl Into<String>) -> Self {
        Self {
            status,
            stdout: Vec::new(),
            step: StepStatus::Failed {
                reason: reason.into(),
            },
        }
    }

    pub fn not_interpreted(why: impl Into<String>) -> Self {
        Self {
            step: StepStatus::NotInterpreted { why: why.into() },
            ..Self::ok()
        }
    }
}

/// The shell leaves: `exit`, `set -e`, or an expansion error.
pub(super) struct Exit(pub i32);

/// A shell process on the host.
pub(super) struct Shell<'a> {
    pub host: &'a mut Host,
    pub fabric: &'a mut dyn Fabric,
    pub now: i64,
    pub env: BTreeMap<String, String>,
    pub errexit: bool,
    pub nounset: bool,
    pub last: i32,
    /// Where its steps are recorded: `runcmd`, `sh /run/x.sh`, ...
    pub stage: String,
    pub depth: u32,
    pub cwd: String,
}

impl<'a> Shell<'a> {
    pub fn new(host: &'a mut Host, fabric: &'a mut dyn Fabric, now: i64, stage: &str) -> Self {
        let env = BTreeMap::from([
            ("HOME".to_owned(), "/root".to_owned()),
            (
                "PATH".to_owned(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ),
        ]);
        Self {
            host,
            fabric,
            now,
            env,
            errexit: false,
            nounset: false,
            last: 0,
            stage: stage.to_owned(),
            depth: 0,
            cwd: "/".to_owned(),
        }
    }

    /// Runs a whole script; returns its exit status.
    pub fn run_script(&mut self, source: &str) -> i32 {
        let items = match lex(source).and_then(|tokens| parse(&tokens, source)) {
            Ok(items) => items,
            Err(reason) => {
                let stage = self.stage.clone();
                self.host.record(
                    &stage,
                    "(script)",
                    StepStatus::Failed {
                        reason: format!("sh: {reason}"),
                    },
                );
                return 2;
            }
        };
        for item in &items {
            match item {
                Item::Unsupported { text, why } => {
                    let stage = self.stage.clone();
                    self.host.record(
                        &stage,
                        text,
                        StepStatus::NotInterpreted { why: why.clone() },
                    );
                    self.last = 0;
                }
                Item::List(list) => {
                    if let Err(Exit(status)) = self.run_and_or(list) {
                        return status;
                    }
                }
            }
        }
        self.last
    }

    fn run_and_or(&mut self, list: &AndOr) -> Result<(), Exit> {
        let mut status = self.run_pipeline(&list.first)?;
        let mut last_ran = 0;
        let mut negated = list.first.negated;
        for (index, (and, pipeline)) in list.rest.iter().enumerate() {
            if (*and && status == 0) || (!*and && status != 0) {
                status = self.run_pipeline(pipeline)?;
                last_ran = index + 1;
                negated = pipeline.negated;
            }
        }
        self.last = status;
        if self.errexit && status != 0 && last_ran == list.rest.len() && !negated {
            return Err(Exit(status));
        }
        Ok(())
    }

    fn run_pipeline(&mut self, pipeline: &Pipeline) -> Result<i32, Exit> {
        let mut input = Vec::new();
        let mut status = 0;
        let single = pipeline.commands.len() == 1;
        for command in &pipeline.commands {
            let out = match self.run_command(command, &input) {
                Ok(out) => out,
                Err(exit) if single => return Err(exit),
                Err(Exit(status)) => Out::fail(status, "exited"),
            };
            status = out.status;
            input = out.stdout;
        }
        if pipeline.negated {
            status = i32::from(status == 0);
        }
        self.last = status;
        Ok(status)
    }

    /// Expands a word; `Ok(None)` when it holds something the simulator does not expand.
    fn expand(&mut self, word: &Word, text: &str) -> Result<Option<String>, Exit> {
        let mut out = String::new();
        for seg in &word.segs {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                Seg::Var(name) if name == "?" => out.push_str(&self.last.to_string()),
                Seg::Var(name) => match self.env.get(name) {
                    Some(value) => out.push_str(value),
                    None if self.nounset => {
                        let stage = self.stage.clone();
                        self.host.record(
                            &stage,
                            text,
                            StepStatus::Failed {
                                reason: format!("sh: {name}: parameter not set"),
                            },
                        );
                        return Err(Exit(2));
                    }
                    None => {}
                },
                Seg::Opaque(_) => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    fn run_command(&mut self, command: &Command, stdin: &[u8]) -> Result<Out, Exit> {
        let text = command.text.clone();
        let stage = self.stage.clone();
        let opaque = |host: &mut Host, why: &str| {
            host.record(
                &stage,
                &text,
                StepStatus::NotInterpreted {
                    why: why.to_owned(),
                },
            );
            Ok(Out::ok())
        };
        let mut argv = Vec::new();
        for word in &command.words {
            match self.expand(word, &text)? {
                Some(arg) => argv.push(arg),
                None => {
                    return opaque(
                        self.host,
                        "command substitution and parameter operators are not expanded",
                    );
                }
            }
        }
        let mut assigns = Vec::new();
        for (name, word) in &command.assigns {
            match self.expand(word, &text)? {
                Some(value) => assigns.push((name.clone(), value)),
                None => {
                    return opaque(
                        self.host,
                        "command substitution and parameter operators are not expanded",
                    );
                }
            }
        }
        if argv.is_empty() {
            for (name, value) in assigns {
                self.env.insert(name, value);
            }
            self.last = 0;
            return Ok(Out::ok());
        }
        let mut input = stdin.to_vec();
        let mut output: Option<(String, bool)> = None;
        for redirect in &command.redirects {
            let target = match &redirect.target {
                Some(word) => match self.expand(word, &text)? {
                    Some(t) => Some(self.path(&t)),
                    None => {
                        return opaque(
                            self.host,
                            "command substitution in a redirection is not expanded",
                        );
                    }
                },
                None => None,
            };
            match (
                &redirect.kind,
                redirect.fd.unwrap_or(match redirect.kind {
                    RedirKind::In | RedirKind::HereDoc { .. } => 0,
                    _ => 1,
                }),
            ) {
                (RedirKind::HereDoc { body, expand }, _) => {
                    input = if *expand {
                        match self.expand_heredoc(body, &text)? {
                            Some(b) => b.into_bytes(),
                            None => {
                                return opaque(
                                    self.host,
                                    "command substitution in a here-document is not expanded",
                                );
                            }
                        }
                    } else {
                        body.clone().into_bytes()
                    };
                }
                (RedirKind::In, 0) => {
                    let path = target.expect("parsed with a target");
                    match self.host.file(&path) {
                        Some(file) => input = file.data.clone(),
                        None => {
                            let out = Out::fail(2, format!("sh: cannot open {path}: no such file"));
                            self.host.record(&stage, &text, out.step.clone());
                            return Ok(out);
                        }
                    }
                }
                (RedirKind::Out { append }, 1) => {
                    let path = target.expect("parsed with a target");
                    if let Err(reason) = self.host.redirect(&path, b"", *append) {
                        let out = Out::fail(2, format!("sh: {reason}"));
                        self.host.record(&stage, &text, out.step.clone());
                        return Ok(out);
                    }
                    output = Some((path, *append));
                }
                // Standard error and descriptor duplication do not change what the simulator
                // models.
                _ => {}
            }
        }
        for (name, value) in &assigns {
            self.env.insert(name.clone(), value.clone());
        }
        let out = self.dispatch(&argv, &input, &text)?;
        self.host.record(&stage, &text, out.step.clone());
        let mut out = out;
        if let Some((path, _)) = output {
            let data = std::mem::take(&mut out.stdout);
            if let Err(reason) = self.host.redirect(&path, &data, true) {
                return Ok(Out::fail(2, format!("sh: {reason}")));
            }
        }
        self.last = out.status;
        Ok(out)
    }

    fn expand_heredoc(&mut self, body: &str, text: &str) -> Result<Option<String>, Exit> {
        let mut word = Word::default();
        let chars: Vec<(usize, char)> = body.char_indices().collect();
        let mut i = 0;
        while i < chars.len() {
            match chars[i].1 {
                '\\' if matches!(chars.get(i + 1).map(|c| c.1), Some('$' | '`' | '\\')) => {
                    word.push_lit(chars[i + 1].1);
                    i += 2;
                }
                '$' => match dollar(&chars, i, body, &mut word) {
                    Ok(next) => i = next,
                    Err(_) => return Ok(None),
                },
                '`' => return Ok(None),
                c => {
                    word.push_lit(c);
                    i += 1;
                }
            }
        }
        self.expand(&word, text)
    }

    /// An absolute path from the shell's working directory.
    pub fn path(&self, path: &str) -> String {
        if path.starts_with('/') {
            super::host::normalize(path)
        } else {
            super::host::normalize(&format!("{}/{}", self.cwd, path))
        }
    }

    /// Runs a script file or string in a child shell with its own options.
    pub fn child(&mut self, stage: &str, source: &str, errexit: bool, nounset: bool) -> i32 {
        if self.depth >= 8 {
            let parent = self.stage.clone();
            self.host.record(
                &parent,
                stage,
                StepStatus::Failed {
                    reason: "scripts nested more than eight deep".to_owned(),
                },
            );
            return 2;
        }
        let env = self.env.clone();
        let cwd = self.cwd.clone();
        let mut child = Shell {
            host: &mut *self.host,
            fabric: &mut *self.fabric,
            now: self.now,
            env,
            errexit,
            nounset,
            last: 0,
            stage: stage.to_owned(),
            depth: self.depth + 1,
            cwd,
        };
        child.run_script(source)
    }
}

/// Joins argv as `sh` would read it back (single quotes around anything unusual), as
/// cloud-init's `shellify` does for list items.
pub(super) fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(source: &str) -> Vec<Vec<String>> {
        let tokens = lex(source).unwrap();
        let items = parse(&tokens, source).unwrap();
        let mut out = Vec::new();
        for item in items {
            let Item::List(list) = item else {
                out.push(vec!["<unsupported>".to_owned()]);
                continue;
            };
            let pipelines = std::iter::once(&list.first).chain(list.rest.iter().map(|(_, p)| p));
            for pipeline in pipelines {
                for command in &pipeline.commands {
                    out.push(
                        command
                            .words
                            .iter()
                            .map(|w| w.literal().unwrap_or_else(|| "<expansion>".to_owned()))
                            .collect(),
                    );
                }
            }
        }
        out
    }

    #[test]
    fn splits_like_sh() {
        assert_eq!(
            words("apt-get install -y 'kubelet=1.34.2-*' \"a b\" c\\ d # comment\n"),
            [["apt-get", "install", "-y", "kubelet=1.34.2-*", "a b", "c d"]]
        );
        assert_eq!(
            words("kubeadm init --config /x && mkdir -p /run/a && echo success > /run/a/f; true"),
            vec![
                vec!["kubeadm", "init", "--config", "/x"],
                vec!["mkdir", "-p", "/run/a"],
                vec!["echo", "success"],
                vec!["true"],
            ]
        );
        assert_eq!(
            words("containerd config default | sed 's/a/b/' > /etc/c.toml"),
            [
                vec!["containerd", "config", "default"],
                vec!["sed", "s/a/b/"]
            ]
        );
        assert_eq!(words("echo $(hostname)"), [["echo", "<expansion>"]]);
        assert_eq!(
            words("echo \"${HOME}/x\" '$HOME'"),
            [["echo", "<expansion>", "$HOME"]]
        );
    }

    #[test]
    fn here_documents_and_continuations() {
        let source = "cat <<EOF | tee /etc/x.conf\noverlay\nbr_netfilter\nEOF\necho a \\\n  b\n";
        let tokens = lex(source).unwrap();
        let body = tokens.iter().find_map(|t| match &t.tok {
            Tok::Redir {
                kind: RedirKind::HereDoc { body, expand },
                ..
            } => Some((body.clone(), *expand)),
            _ => None,
        });
        assert_eq!(body, Some(("overlay\nbr_netfilter\n".to_owned(), true)));
        assert_eq!(
            words(source),
            vec![
                vec!["cat"],
                vec!["tee", "/etc/x.conf"],
                vec!["echo", "a", "b"]
            ]
        );
        assert!(lex("cat <<EOF\nno end\n").is_err());
        assert!(lex("echo 'open\n").is_err());
    }

    #[test]
    fn compound_commands_are_set_aside_whole() {
        let source = "if [ -f /x ]; then\n  echo yes\nfi\necho after\n";
        assert_eq!(
            words(source),
            vec![vec!["<unsupported>"], vec!["echo", "after"]]
        );
        assert_eq!(
            words("for i in 1 2; do echo $i; done; echo z"),
            vec![
                vec!["<unsupported>".to_owned()],
                vec!["echo".to_owned(), "z".to_owned()]
            ]
        );
        assert!(parse(&lex("&& x").unwrap(), "&& x").is_err());
    }

    #[test]
    fn redirections_take_descriptors() {
        let source = "cmd 2>/dev/null >>/var/log/x 2>&1";
        let tokens = lex(source).unwrap();
        let items = parse(&tokens, source).unwrap();
        let Item::List(list) = &items[0] else {
            panic!()
        };
        let fds: Vec<_> = list.first.commands[0]
            .redirects
            .iter()
            .map(|r| (r.fd, r.kind.clone()))
            .collect();
        assert_eq!(
            fds,
            vec![
                (Some(2), RedirKind::Out { append: false }),
                (None, RedirKind::Out { append: true }),
                (Some(2), RedirKind::Dup),
            ]
        );
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}
