//! Syncthing as a peer, set up as BENCHMARKING.md describes: two instances
//! with homes of their own made by `syncthing generate --no-default-folder
//! --skip-port-probing`, each `config.xml` edited ([`configure`]) to put
//! the GUI/REST API and the sync listener on loopback ports, give each
//! device the other's static address and share one folder, and to turn off
//! global and local discovery, relays, NAT traversal, usage and crash
//! reporting, auto-upgrade and Syncthing's lowering of its own priority
//! (so it competes for the CPU like every other tool). The folder's file
//! watcher is off and its periodic rescan an hour away: a measurement
//! starts a scan itself with `POST /rest/db/scan`, so the watcher's delay
//! (10 s by default) is not counted. Run with `STNOUPGRADE=1 syncthing
//! serve --no-browser --no-restart --no-upgrade`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use syncfolder_testkit::free_port;

use super::http;
use super::measure::wait_until;
use super::process::Guard;

/// The shared folder's ID.
pub const FOLDER_ID: &str = "bench";

/// What [`configure`] writes into one instance's `config.xml`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub gui_port: u16,
    pub listen_port: u16,
    pub own_device_id: String,
    pub peer_device_id: String,
    pub peer_listen_port: u16,
    pub folder_path: PathBuf,
}

/// One running instance.
pub struct Instance {
    guard: Guard,
    pub gui_port: u16,
    api_key: String,
    pub device_id: String,
}

/// Two connected instances sharing [`FOLDER_ID`]: `a` at `dir/st-a`, `b`
/// at `dir/st-b`.
pub struct Pair {
    pub a: Instance,
    pub b: Instance,
}

impl Pair {
    /// Generates, configures and starts both, and waits until they are
    /// connected and the folder is idle on both.
    pub fn start(dir: &Path) -> anyhow::Result<Pair> {
        let homes = [dir.join("st-home-a"), dir.join("st-home-b")];
        let folders = [dir.join("st-a"), dir.join("st-b")];
        let mut device_ids = Vec::new();
        for (home, folder) in homes.iter().zip(&folders) {
            device_ids.push(generate(home)?);
            // the folder marker; without it Syncthing refuses the folder
            std::fs::create_dir_all(folder.join(".stfolder"))?;
        }
        let gui_ports = [free_port(), free_port()];
        let listen_ports = [free_port(), free_port()];
        let mut instances = Vec::new();
        for idx in 0..2 {
            let other = 1 - idx;
            let config_path = homes[idx].join("config.xml");
            let xml = std::fs::read_to_string(&config_path)
                .with_context(|| format!("reading {}", config_path.display()))?;
            let settings = Settings {
                gui_port: gui_ports[idx],
                listen_port: listen_ports[idx],
                own_device_id: device_ids[idx].clone(),
                peer_device_id: device_ids[other].clone(),
                peer_listen_port: listen_ports[other],
                folder_path: folders[idx].clone(),
            };
            let xml = configure(&xml, &settings)?;
            std::fs::write(&config_path, &xml)?;
            let api_key = tag_text(&xml, "apikey")
                .context("no <apikey> in Syncthing's config.xml")?
                .to_owned();
            let mut command = Command::new("syncthing");
            command
                .arg("serve")
                .arg(format!("--home={}", homes[idx].display()))
                .args(["--no-browser", "--no-restart", "--no-upgrade"])
                .env("STNOUPGRADE", "1");
            let log = dir.join(format!("syncthing-{}.log", ["a", "b"][idx]));
            instances.push(Instance {
                guard: Guard::spawn("syncthing", &mut command, &log)?,
                gui_port: gui_ports[idx],
                api_key,
                device_id: device_ids[idx].clone(),
            });
        }
        let b = instances.pop().context("two instances")?;
        let a = instances.pop().context("two instances")?;
        let mut pair = Pair { a, b };
        for instance in [&mut pair.a, &mut pair.b] {
            wait_until(
                "Syncthing's REST API",
                Duration::from_secs(60),
                Duration::from_millis(50),
                || {
                    instance.guard.check_running()?;
                    Ok(instance.get("/rest/system/ping").is_ok())
                },
            )?;
        }
        let peer = pair.b.device_id.clone();
        let a = &mut pair.a;
        wait_until(
            "the two Syncthing instances to connect",
            Duration::from_secs(60),
            Duration::from_millis(50),
            || {
                let connections = a.get("/rest/system/connections")?;
                Ok(connections["connections"][&peer]["connected"] == Value::Bool(true))
            },
        )?;
        for instance in [&mut pair.a, &mut pair.b] {
            wait_until(
                "Syncthing's folder to be idle",
                Duration::from_secs(60),
                Duration::from_millis(50),
                || {
                    let status = instance.get(&format!("/rest/db/status?folder={FOLDER_ID}"))?;
                    Ok(status["state"] == "idle")
                },
            )?;
        }
        Ok(pair)
    }
}

impl Instance {
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    fn call(&mut self, method: &str, path: &str) -> anyhow::Result<Value> {
        self.guard.check_running()?;
        let response = http::request(
            method,
            self.gui_port,
            path,
            &[("X-API-Key", &self.api_key)],
            b"",
        )?;
        if response.status != 200 {
            bail!(
                "Syncthing answered {method} {path} with {}: {}",
                response.status,
                response.body.trim()
            );
        }
        if response.body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&response.body)
            .with_context(|| format!("Syncthing's answer to {method} {path}"))
    }

    pub fn get(&mut self, path: &str) -> anyhow::Result<Value> {
        self.call("GET", path)
    }

    /// Starts a scan of the shared folder now.
    pub fn scan(&mut self) -> anyhow::Result<()> {
        self.call("POST", &format!("/rest/db/scan?folder={FOLDER_ID}"))?;
        Ok(())
    }

    /// This instance's own view of the folder: (global bytes, items it
    /// still needs).
    pub fn completion(&mut self) -> anyhow::Result<(u64, u64)> {
        let completion = self.get(&format!("/rest/db/completion?folder={FOLDER_ID}"))?;
        let number = |name: &str| completion[name].as_u64().unwrap_or(u64::MAX);
        Ok((number("globalBytes"), number("needItems")))
    }

    /// Bytes this instance has sent to all its peers.
    pub fn bytes_sent(&mut self) -> anyhow::Result<u64> {
        let connections = self.get("/rest/system/connections")?;
        connections["total"]["outBytesTotal"]
            .as_u64()
            .context("no total.outBytesTotal in /rest/system/connections")
    }
}

/// `syncthing generate` into `home`; returns the new device's ID.
fn generate(home: &Path) -> anyhow::Result<String> {
    let output = Command::new("syncthing")
        .arg("generate")
        .arg(format!("--home={}", home.display()))
        .args(["--no-default-folder", "--skip-port-probing"])
        .output()
        .context("running syncthing generate")?;
    if !output.status.success() {
        bail!(
            "syncthing generate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let xml = std::fs::read_to_string(home.join("config.xml"))
        .context("reading the config.xml syncthing generate wrote")?;
    first_device_id(&xml).context("no <device id=...> in the generated config.xml")
}

fn first_device_id(xml: &str) -> Option<String> {
    let start = xml.find("<device id=\"")? + "<device id=\"".len();
    let end = start + xml[start..].find('"')?;
    Some(xml[start..end].to_owned())
}

/// The text of the first `<tag>…</tag>`.
fn tag_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..end])
}

/// Replaces the text of the first `<tag>…</tag>` after `from`.
fn set_tag(xml: &str, from: usize, tag: &str, value: &str) -> anyhow::Result<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = from
        + xml[from..]
            .find(&open)
            .with_context(|| format!("no <{tag}> in Syncthing's config.xml"))?
        + open.len();
    let end = start
        + xml[start..]
            .find(&close)
            .with_context(|| format!("no </{tag}> in Syncthing's config.xml"))?;
    Ok(format!("{}{value}{}", &xml[..start], &xml[end..]))
}

/// Edits a generated `config.xml` for the bench (see the module comment).
pub fn configure(xml: &str, settings: &Settings) -> anyhow::Result<String> {
    let gui = xml
        .find("<gui ")
        .context("no <gui> in Syncthing's config.xml")?;
    let mut xml = set_tag(
        xml,
        gui,
        "address",
        &format!("127.0.0.1:{}", settings.gui_port),
    )?;
    let options = xml
        .find("<options>")
        .context("no <options> in Syncthing's config.xml")?;
    for (tag, value) in [
        (
            "listenAddress",
            format!("tcp://127.0.0.1:{}", settings.listen_port),
        ),
        ("globalAnnounceEnabled", "false".to_owned()),
        ("localAnnounceEnabled", "false".to_owned()),
        ("relaysEnabled", "false".to_owned()),
        ("natEnabled", "false".to_owned()),
        ("startBrowser", "false".to_owned()),
        ("urAccepted", "-1".to_owned()),
        ("autoUpgradeIntervalH", "0".to_owned()),
        ("crashReportingEnabled", "false".to_owned()),
        ("setLowPriority", "false".to_owned()),
    ] {
        xml = set_tag(&xml, options, tag, &value)?;
    }
    let peer_and_folder = format!(
        "    <folder id=\"{FOLDER_ID}\" label=\"{FOLDER_ID}\" path=\"{path}\" type=\"sendreceive\" \
         rescanIntervalS=\"3600\" fsWatcherEnabled=\"false\" fsWatcherDelayS=\"10\" \
         ignorePerms=\"false\" autoNormalize=\"true\">\n\
         \x20       <device id=\"{own}\" introducedBy=\"\"></device>\n\
         \x20       <device id=\"{peer}\" introducedBy=\"\"></device>\n\
         \x20   </folder>\n\
         \x20   <device id=\"{peer}\" name=\"peer\" compression=\"metadata\" introducer=\"false\" \
         skipIntroductionRemovals=\"false\" introducedBy=\"\">\n\
         \x20       <address>tcp://127.0.0.1:{peer_port}</address>\n\
         \x20       <paused>false</paused>\n\
         \x20       <autoAcceptFolders>false</autoAcceptFolders>\n\
         \x20   </device>\n",
        path = xml_escape(&settings.folder_path.to_string_lossy()),
        own = settings.own_device_id,
        peer = settings.peer_device_id,
        peer_port = settings.peer_listen_port,
    );
    let gui = xml.find("    <gui ").unwrap_or(gui);
    xml.insert_str(gui, &peer_and_folder);
    Ok(xml)
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATED: &str = r#"<configuration version="36">
    <device id="AAAAAAA-AAAAAAA" name="vm" compression="metadata" introducer="false" skipIntroductionRemovals="false" introducedBy="">
        <address>dynamic</address>
    </device>
    <gui enabled="true" tls="false" debugging="false">
        <address>127.0.0.1:8384</address>
        <apikey>KEY123</apikey>
    </gui>
    <options>
        <listenAddress>default</listenAddress>
        <globalAnnounceEnabled>true</globalAnnounceEnabled>
        <localAnnounceEnabled>true</localAnnounceEnabled>
        <relaysEnabled>true</relaysEnabled>
        <startBrowser>true</startBrowser>
        <natEnabled>true</natEnabled>
        <urAccepted>0</urAccepted>
        <autoUpgradeIntervalH>12</autoUpgradeIntervalH>
        <setLowPriority>true</setLowPriority>
        <crashReportingEnabled>true</crashReportingEnabled>
    </options>
    <defaults>
        <device id="" compression="metadata"><address>dynamic</address></device>
    </defaults>
</configuration>
"#;

    fn settings() -> Settings {
        Settings {
            gui_port: 41001,
            listen_port: 41002,
            own_device_id: "AAAAAAA-AAAAAAA".to_owned(),
            peer_device_id: "BBBBBBB-BBBBBBB".to_owned(),
            peer_listen_port: 41003,
            folder_path: PathBuf::from("/bench/st-a"),
        }
    }

    #[test]
    fn everything_listens_on_loopback_and_nothing_reaches_the_internet() {
        let xml = configure(GENERATED, &settings()).unwrap();
        assert!(xml.contains("<address>127.0.0.1:41001</address>\n        <apikey>KEY123"));
        assert!(xml.contains("<listenAddress>tcp://127.0.0.1:41002</listenAddress>"));
        for off in [
            "globalAnnounceEnabled",
            "localAnnounceEnabled",
            "relaysEnabled",
            "natEnabled",
            "startBrowser",
            "crashReportingEnabled",
            "setLowPriority",
        ] {
            assert!(xml.contains(&format!("<{off}>false</{off}>")), "{off}");
        }
        assert!(xml.contains("<urAccepted>-1</urAccepted>"));
        assert!(xml.contains("<autoUpgradeIntervalH>0</autoUpgradeIntervalH>"));
        // the first device (this one) keeps its dynamic address
        assert_eq!(first_device_id(&xml).as_deref(), Some("AAAAAAA-AAAAAAA"));
        assert_eq!(tag_text(&xml, "apikey"), Some("KEY123"));
    }

    #[test]
    fn the_peer_gets_a_static_address_and_the_folder_is_shared_without_a_watcher() {
        let xml = configure(GENERATED, &settings()).unwrap();
        let peer = xml
            .find("<device id=\"BBBBBBB-BBBBBBB\" name=\"peer\"")
            .unwrap();
        assert!(xml[peer..].contains("<address>tcp://127.0.0.1:41003</address>"));
        let folder = xml.find("<folder id=\"bench\"").unwrap();
        assert!(folder < xml.find("<gui ").unwrap());
        let folder_xml = &xml[folder..xml[folder..].find("</folder>").unwrap() + folder];
        assert!(folder_xml.contains("path=\"/bench/st-a\""));
        assert!(folder_xml.contains("fsWatcherEnabled=\"false\""));
        assert!(folder_xml.contains("<device id=\"AAAAAAA-AAAAAAA\""));
        assert!(folder_xml.contains("<device id=\"BBBBBBB-BBBBBBB\""));
    }

    #[test]
    fn a_config_without_its_options_is_refused() {
        assert!(
            configure(
                "<configuration><gui ><address>x</address></gui></configuration>",
                &settings()
            )
            .is_err()
        );
    }
}
