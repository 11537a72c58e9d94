//! Drawing the TUI from its state: the tasks on the left; the selected
//! task's subtasks and the selected subtask's log on the right; a status
//! line; the confirmation and help boxes over it all. Only the visible
//! tail of a log is laid out, whatever its length.

use aida_gateway::api::{SubtaskStatus, TaskStatus};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Wrap};

use super::app::{App, Focus, short};

pub fn draw(frame: &mut Frame<'_>, app: &mut App) {
    let [main, footer] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(main);
    let rows = (app.subtasks().len() as u16 + 2).clamp(3, right.height / 2);
    let [top, bottom] =
        Layout::vertical([Constraint::Length(rows), Constraint::Min(3)]).areas(right);
    tasks(frame, app, left);
    subtasks(frame, app, top);
    log(frame, app, bottom);
    status_line(frame, app, footer);
    if let Some(request) = &app.confirm {
        let text = format!(
            "{}? y to confirm, any other key to keep it",
            capital(&request.describe())
        );
        popup(frame, "Confirm", &[text], 60, 5);
    }
    if app.help {
        popup(
            frame,
            "Keys",
            HELP.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .as_slice(),
            62,
            HELP.len() as u16 + 2,
        );
    }
}

const HELP: [&str; 9] = [
    "↑ ↓ or j k   move in the focused pane",
    "Tab ← →      switch between tasks and subtasks",
    "c            cancel the task, or the focused subtask",
    "a            approve the task's plan",
    "y            confirm; any other key: keep it",
    "?            this help (any key closes it)",
    "q  Ctrl-C    quit",
    "",
    "The log pane follows the selected subtask's output live.",
];

fn capital(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn task_colour(status: TaskStatus) -> Color {
    match status {
        TaskStatus::Succeeded => Color::Green,
        TaskStatus::Failed => Color::Red,
        TaskStatus::Conflicted => Color::Magenta,
        TaskStatus::Cancelled => Color::DarkGray,
        TaskStatus::AwaitingApproval => Color::Yellow,
        _ => Color::Cyan,
    }
}

fn subtask_colour(status: SubtaskStatus) -> Color {
    match status {
        SubtaskStatus::Succeeded => Color::Green,
        SubtaskStatus::Failed => Color::Red,
        SubtaskStatus::Cancelled => Color::DarkGray,
        SubtaskStatus::Running => Color::Cyan,
        _ => Color::Gray,
    }
}

fn pane(title: &str, focused: bool) -> Block<'_> {
    let style = if focused {
        Style::default().fg(Color::Yellow)
    } else {
        Style::default()
    };
    Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(title)
}

fn tasks(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let items: Vec<ListItem<'_>> = app
        .tasks
        .iter()
        .map(|t| {
            let description = t
                .description
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("");
            ListItem::new(Line::from(vec![
                Span::styled(
                    format!("{:<9} ", t.status.label()),
                    Style::default().fg(task_colour(t.status)),
                ),
                Span::raw(format!("{} {description}", short(&t.id))),
            ]))
        })
        .collect();
    let title = format!("Tasks ({})", app.tasks.len());
    let list = List::new(items)
        .block(pane(&title, app.focus == Focus::Tasks))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state =
        ListState::default().with_selected((!app.tasks.is_empty()).then_some(app.task_index));
    frame.render_stateful_widget(list, area, &mut state);
}

fn subtasks(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let now = chrono::Utc::now();
    let items: Vec<ListItem<'_>> = app
        .subtasks()
        .iter()
        .map(|s| {
            let mut text = format!("{:<16} ", s.name);
            if !s.depends_on.is_empty() {
                text.push_str(&format!("after {}  ", s.depends_on.join(",")));
            }
            if s.status == SubtaskStatus::Running {
                if let Some(worker) = &s.worker {
                    text.push_str(&format!("on {worker}  "));
                }
                if let Some(at) = s.started_at {
                    text.push_str(&format!("{}s", (now - at).num_seconds().max(0)));
                }
            }
            if let Some(e) = s
                .error
                .as_deref()
                .filter(|_| s.status == SubtaskStatus::Failed)
            {
                text.push_str(e.lines().next().unwrap_or(""));
            }
            ListItem::new(Line::from(vec![
                Span::styled(
                    format!("{:<9} ", s.status.label()),
                    Style::default().fg(subtask_colour(s.status)),
                ),
                Span::raw(text),
            ]))
        })
        .collect();
    let title = match &app.detail {
        Some(t) => format!("Task {} {}", short(&t.id), t.status.label()),
        None => "Subtasks".into(),
    };
    let list = List::new(items)
        .block(pane(&title, app.focus == Focus::Subtasks))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let selected =
        (app.focus == Focus::Subtasks && !app.subtasks().is_empty()).then_some(app.subtask_index);
    let mut state = ListState::default().with_selected(selected);
    frame.render_stateful_widget(list, area, &mut state);
}

fn log(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let title = match app.selected_subtask() {
        Some(s) => match app.log() {
            Some(log) => format!("Log of {} ({} lines)", s.name, log.total),
            None => format!("Log of {}", s.name),
        },
        None => "Log".into(),
    };
    let visible = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line<'_>> = app
        .log()
        .map(|log| {
            let skip = log.tail.len().saturating_sub(visible);
            log.tail
                .iter()
                .skip(skip)
                .map(|l| Line::raw(l.as_str()))
                .collect()
        })
        .unwrap_or_default();
    frame.render_widget(Paragraph::new(lines).block(pane(&title, false)), area);
}

fn status_line(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let keys = "q quit  ↑↓ move  Tab pane  c cancel  a approve  ? help";
    let text = match &app.message {
        Some(m) => format!("{keys}  |  {m}"),
        None => keys.to_owned(),
    };
    frame.render_widget(
        Paragraph::new(text).style(Style::default().add_modifier(Modifier::DIM)),
        area,
    );
}

fn popup(frame: &mut Frame<'_>, title: &str, lines: &[String], width: u16, height: u16) {
    let area = frame.area();
    let (w, h) = (width.min(area.width), height.min(area.height));
    let rect = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    frame.render_widget(Clear, rect);
    let text: Vec<Line<'_>> = lines.iter().map(|l| Line::raw(l.as_str())).collect();
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(title)),
        rect,
    );
}
