//! `aida tui`: the tasks, a task's subtasks with their dependencies and
//! statuses, and the selected subtask's log as it streams (SSE), with keys
//! to cancel and approve (after a confirmation) and help on `?`.
//!
//! The terminal is restored however the program ends: on `q`, Ctrl-C, an
//! error, or a panic (ratatui's `init` installs a panic hook that restores
//! it before the message is printed).
//!
//! - `app`: the state and what each key and message does to it;
//! - `view`: drawing the state, with nothing but the state as input;
//! - this file: the loop that feeds keys, refreshes and events to the app.

mod app;
mod view;

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use ratatui::crossterm::event::{self, Event as TermEvent};
use tokio::sync::mpsc;

use crate::client::Client;
pub use app::{App, Msg};

/// How often the task list and the selected task are read again.
const REFRESH: Duration = Duration::from_millis(700);

/// Runs the terminal UI until the user quits.
pub async fn run(client: Client, task: Option<String>) -> anyhow::Result<ExitCode> {
    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    // Keys come from a thread of their own: crossterm's read blocks.
    let keys = tx.clone();
    std::thread::spawn(move || {
        loop {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => match event::read() {
                    Ok(TermEvent::Key(key)) => {
                        if keys.blocking_send(Msg::Key(key)).is_err() {
                            return;
                        }
                    }
                    Ok(TermEvent::Resize(..)) => {
                        if keys.blocking_send(Msg::Resize).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                Ok(false) => {
                    if keys.is_closed() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });

    let mut terminal = ratatui::init();
    let mut app = App::new(task);
    let mut follower: Option<tokio::task::JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(REFRESH);
    let result = loop {
        terminal.draw(|frame| view::draw(frame, &mut app))?;
        let msg = tokio::select! {
            _ = tick.tick() => {
                refresh(&client, &app, tx.clone());
                continue;
            }
            msg = rx.recv() => msg,
        };
        let Some(msg) = msg else {
            break Ok(ExitCode::SUCCESS);
        };
        let mut batch = vec![msg];
        // Take what else is waiting, so a fast log draws once per batch.
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() > 4096 {
                break;
            }
        }
        let mut quit = false;
        for msg in batch {
            for action in app.update(msg) {
                match action {
                    app::Action::Quit => quit = true,
                    app::Action::Follow(task_id) => {
                        if let Some(old) = follower.take() {
                            old.abort();
                        }
                        follower = Some(tokio::spawn(follow(client.clone(), task_id, tx.clone())));
                    }
                    app::Action::Send(request) => {
                        tokio::spawn(send(client.clone(), request, tx.clone()));
                    }
                }
            }
        }
        if quit {
            break Ok(ExitCode::SUCCESS);
        }
    };
    ratatui::restore();
    if let Some(f) = follower {
        f.abort();
    }
    result
}

/// Reads the task list and the selected task in the background.
fn refresh(client: &Client, app: &App, tx: mpsc::Sender<Msg>) {
    let client = client.clone();
    let selected = app.selected_task_id();
    tokio::spawn(async move {
        let msg = match client.list_tasks(Some(100)).await {
            Ok(tasks) => Msg::Tasks(tasks),
            Err(e) => Msg::Error(format!("{e:#}")),
        };
        let _ = tx.send(msg).await;
        if let Some(id) = selected {
            let msg = match client.get_task(&id).await {
                Ok(task) => Msg::Task(Box::new(task)),
                Err(e) => Msg::Error(format!("{e:#}")),
            };
            let _ = tx.send(msg).await;
        }
    });
}

/// Streams a task's events (its log lines) until the task ends.
async fn follow(client: Client, task_id: String, tx: mpsc::Sender<Msg>) {
    let mut events = match client.follow(&task_id, None).await {
        Ok(events) => events,
        Err(e) => {
            let _ = tx.send(Msg::Error(format!("{e:#}"))).await;
            return;
        }
    };
    while let Some(event) = events.next().await {
        let msg = match event {
            Ok(event) => Msg::Event(task_id.clone(), Box::new(event)),
            Err(e) => Msg::Error(format!("{e:#}")),
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// Carries out a confirmed action and says how it went.
async fn send(client: Client, request: app::Request, tx: mpsc::Sender<Msg>) {
    let answer = match &request {
        app::Request::CancelTask(id) => client.cancel_task(id).await,
        app::Request::CancelSubtask(id, name) => client.cancel_subtask(id, name).await,
        app::Request::Approve(id) => client.approve_task(id).await,
    };
    let msg = match answer {
        Ok(task) => Msg::Done(request.describe(), Box::new(task)),
        Err(e) => Msg::Error(format!("{}: {e:#}", request.describe())),
    };
    let _ = tx.send(msg).await;
}
