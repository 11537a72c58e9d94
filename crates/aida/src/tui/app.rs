//! The TUI's state and what keys and messages do to it. No I/O: what must
//! be fetched or sent comes back as an [`Action`] for the loop to carry
//! out, so this is tested without a terminal or a server.

use std::collections::{HashMap, VecDeque};

use aida_gateway::api::{Event, SubtaskStatus, Task, TaskStatus};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Log lines kept per subtask: the view shows the tail, so a log of any
/// length costs the same to draw.
pub const MAX_LOG_LINES: usize = 10_000;

/// A subtask's log as followed: its tail, and how many lines it had.
#[derive(Debug, Default)]
pub struct SubtaskLog {
    pub tail: VecDeque<String>,
    pub total: usize,
}

impl SubtaskLog {
    fn push(&mut self, line: &str) {
        if self.tail.len() == MAX_LOG_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_owned());
        self.total += 1;
    }
}

/// What reaches the app.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Resize,
    Tasks(Vec<Task>),
    Task(Box<Task>),
    /// An event of the followed task.
    Event(String, Box<Event>),
    /// A request went through.
    Done(String, Box<Task>),
    Error(String),
}

/// What the loop must do for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Stream this task's events (and stop streaming the previous one's).
    Follow(String),
    Send(Request),
}

/// A change asked of the server, once confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    CancelTask(String),
    CancelSubtask(String, String),
    Approve(String),
}

impl Request {
    pub fn describe(&self) -> String {
        match self {
            Request::CancelTask(id) => format!("cancel task {}", short(id)),
            Request::CancelSubtask(id, name) => {
                format!("cancel subtask {name} of task {}", short(id))
            }
            Request::Approve(id) => format!("approve the plan of task {}", short(id)),
        }
    }
}

/// Which pane the arrow keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Tasks,
    Subtasks,
}

pub struct App {
    pub tasks: Vec<Task>,
    pub task_index: usize,
    /// The selected task as last read, with its subtasks.
    pub detail: Option<Task>,
    pub subtask_index: usize,
    pub focus: Focus,
    /// The followed task's log lines, by subtask.
    pub logs: HashMap<String, SubtaskLog>,
    pub followed: Option<String>,
    /// A request waiting for `y`.
    pub confirm: Option<Request>,
    pub help: bool,
    /// The last error or outcome, on the status line.
    pub message: Option<String>,
    /// The task to select once the list holds it (`aida tui --task`).
    wanted: Option<String>,
}

pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

impl App {
    pub fn new(task: Option<String>) -> Self {
        App {
            tasks: Vec::new(),
            task_index: 0,
            detail: None,
            subtask_index: 0,
            focus: Focus::Tasks,
            logs: HashMap::new(),
            followed: None,
            confirm: None,
            help: false,
            message: None,
            wanted: task,
        }
    }

    pub fn selected_task_id(&self) -> Option<String> {
        self.tasks.get(self.task_index).map(|t| t.id.clone())
    }

    /// The subtasks shown, in order; the selected one is
    /// `subtask_index`.
    pub fn subtasks(&self) -> &[aida_gateway::api::Subtask] {
        self.detail
            .as_ref()
            .map(|t| t.subtasks.as_slice())
            .unwrap_or_default()
    }

    pub fn selected_subtask(&self) -> Option<&aida_gateway::api::Subtask> {
        self.subtasks().get(self.subtask_index)
    }

    /// The selected subtask's log.
    pub fn log(&self) -> Option<&SubtaskLog> {
        self.selected_subtask().and_then(|s| self.logs.get(&s.name))
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Action> {
        match msg {
            Msg::Key(key) if key.kind != KeyEventKind::Release => self.key(key),
            Msg::Key(_) | Msg::Resize => Vec::new(),
            Msg::Tasks(tasks) => {
                let selected = self.wanted.take().or_else(|| self.selected_task_id());
                self.tasks = tasks;
                self.task_index = selected
                    .as_ref()
                    .and_then(|id| self.tasks.iter().position(|t| &t.id == id))
                    .unwrap_or(0)
                    .min(self.tasks.len().saturating_sub(1));
                self.follow_selected()
            }
            Msg::Task(task) => {
                if Some(&task.id) == self.selected_task_id().as_ref() {
                    self.subtask_index = self
                        .subtask_index
                        .min(task.subtasks.len().saturating_sub(1));
                    self.detail = Some(*task);
                }
                Vec::new()
            }
            Msg::Event(task_id, event) => {
                if Some(&task_id) == self.followed.as_ref()
                    && event.kind == aida_core::event::kind::LOG_LINE
                    && let Some(subtask) = &event.subtask
                {
                    let line = event
                        .data
                        .get("line")
                        .and_then(|l| l.as_str())
                        .unwrap_or_default();
                    self.logs.entry(subtask.clone()).or_default().push(line);
                }
                Vec::new()
            }
            Msg::Done(what, task) => {
                self.message = Some(format!("done: {what}"));
                if Some(&task.id) == self.selected_task_id().as_ref() {
                    self.detail = Some(*task);
                }
                Vec::new()
            }
            Msg::Error(e) => {
                self.message = Some(format!("error: {e}"));
                Vec::new()
            }
        }
    }

    /// Starts following the selected task's events when it changed.
    fn follow_selected(&mut self) -> Vec<Action> {
        let selected = self.selected_task_id();
        if selected == self.followed {
            return Vec::new();
        }
        self.followed = selected.clone();
        self.logs.clear();
        self.subtask_index = 0;
        self.detail = self
            .tasks
            .get(self.task_index)
            .filter(|t| Some(&t.id) == selected.as_ref())
            .cloned();
        selected.map(Action::Follow).into_iter().collect()
    }

    fn key(&mut self, key: KeyEvent) -> Vec<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            return vec![Action::Quit];
        }
        if let Some(request) = self.confirm.take() {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    self.message = Some(format!("sent: {}", request.describe()));
                    vec![Action::Send(request)]
                }
                _ => {
                    self.message = Some("not done".into());
                    Vec::new()
                }
            };
        }
        if self.help {
            self.help = false;
            return Vec::new();
        }
        match key.code {
            KeyCode::Char('q') => return vec![Action::Quit],
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab | KeyCode::BackTab | KeyCode::Left | KeyCode::Right => {
                self.focus = match self.focus {
                    Focus::Tasks if !self.subtasks().is_empty() => Focus::Subtasks,
                    _ => Focus::Tasks,
                };
            }
            KeyCode::Down | KeyCode::Char('j') => return self.step(1),
            KeyCode::Up | KeyCode::Char('k') => return self.step(-1),
            KeyCode::Char('c') => self.confirm = self.cancel_request(),
            KeyCode::Char('a') => {
                self.confirm = match self.detail.as_ref().or(self.tasks.get(self.task_index)) {
                    Some(t) if t.status == TaskStatus::AwaitingApproval => {
                        Some(Request::Approve(t.id.clone()))
                    }
                    Some(_) => {
                        self.message = Some("this task has no plan waiting for approval".into());
                        None
                    }
                    None => None,
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn step(&mut self, by: isize) -> Vec<Action> {
        let moved = |index: usize, len: usize| {
            (index as isize + by).clamp(0, len.saturating_sub(1) as isize) as usize
        };
        match self.focus {
            Focus::Tasks => {
                self.task_index = moved(self.task_index, self.tasks.len());
                self.follow_selected()
            }
            Focus::Subtasks => {
                self.subtask_index = moved(self.subtask_index, self.subtasks().len());
                Vec::new()
            }
        }
    }

    fn cancel_request(&mut self) -> Option<Request> {
        let task = self.tasks.get(self.task_index)?;
        if task.status.is_terminal() {
            self.message = Some(format!("task {} has ended", short(&task.id)));
            return None;
        }
        match (self.focus, self.selected_subtask()) {
            (Focus::Subtasks, Some(st)) => {
                if matches!(st.status, SubtaskStatus::Pending | SubtaskStatus::Running) {
                    Some(Request::CancelSubtask(task.id.clone(), st.name.clone()))
                } else {
                    self.message = Some(format!("subtask {} has ended", st.name));
                    None
                }
            }
            _ => Some(Request::CancelTask(task.id.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, status: &str) -> Task {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": status, "repo": "/r", "priority": 0, "max_attempts": 3,
            "subtasks": [
                {"name": "api", "prompt": "p", "status": "running", "attempts": 1},
                {"name": "ui", "prompt": "p", "status": "pending", "attempts": 0, "depends_on": ["api"]}
            ]
        }))
        .unwrap()
    }

    fn key(code: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn log(task_id: &str, subtask: &str, line: &str) -> Msg {
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": 1, "channel": "log", "kind": "log.line", "task_id": task_id, "subtask": subtask,
            "at": "2026-01-01T00:00:00Z", "data": {"stream": "stdout", "line": line}
        }))
        .unwrap();
        Msg::Event(task_id.into(), Box::new(event))
    }

    #[test]
    fn it_follows_the_selected_task_and_cancels_only_after_yes() {
        let mut app = App::new(None);
        let actions = app.update(Msg::Tasks(vec![
            task("t1", "running"),
            task("t2", "running"),
        ]));
        assert_eq!(actions, [Action::Follow("t1".into())]);
        assert_eq!(
            app.update(key(KeyCode::Down)),
            [Action::Follow("t2".into())]
        );
        app.update(Msg::Task(Box::new(task("t2", "running"))));
        app.update(key(KeyCode::Tab));
        assert_eq!(app.focus, Focus::Subtasks);
        app.update(log("t2", "api", "hello"));
        app.update(log("t1", "api", "not followed"));
        assert_eq!(app.log().unwrap().tail, ["hello"]);
        assert_eq!(app.log().unwrap().total, 1);

        assert!(app.update(key(KeyCode::Char('c'))).is_empty());
        assert_eq!(
            app.confirm,
            Some(Request::CancelSubtask("t2".into(), "api".into()))
        );
        assert!(app.update(key(KeyCode::Char('n'))).is_empty(), "no is no");
        app.update(key(KeyCode::Tab));
        app.update(key(KeyCode::Char('c')));
        assert_eq!(
            app.update(key(KeyCode::Char('y'))),
            [Action::Send(Request::CancelTask("t2".into()))]
        );
        assert_eq!(app.update(key(KeyCode::Char('a'))), []);
        assert!(app.message.as_deref().unwrap().contains("no plan"));
        assert_eq!(
            app.update(Msg::Key(KeyEvent::new(
                KeyCode::Char('c'),
                KeyModifiers::CONTROL
            ))),
            [Action::Quit]
        );
    }

    #[test]
    fn a_long_log_keeps_its_tail() {
        let mut app = App::new(Some("t1".into()));
        app.update(Msg::Tasks(vec![task("t1", "running")]));
        app.update(Msg::Task(Box::new(task("t1", "running"))));
        for i in 0..(MAX_LOG_LINES + 5) {
            app.update(log("t1", "api", &format!("line {i}")));
        }
        let log = app.log().unwrap();
        assert_eq!(log.total, MAX_LOG_LINES + 5);
        assert_eq!(log.tail.len(), MAX_LOG_LINES);
        assert_eq!(
            log.tail.back().unwrap(),
            &format!("line {}", MAX_LOG_LINES + 4)
        );
    }
}
