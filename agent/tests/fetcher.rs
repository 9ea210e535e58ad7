//! The fetcher against a tiny counting HTTP server on 127.0.0.1.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use drove_agent::fetcher::Fetcher;
use drove_proto::mesos::Uri;

type Files = Arc<(HashMap<String, Vec<u8>>, Mutex<HashMap<String, usize>>)>;

async fn serve_file(
    State(files): State<Files>,
    Path(name): Path<String>,
) -> Result<Vec<u8>, StatusCode> {
    *files.1.lock().unwrap().entry(name.clone()).or_default() += 1;
    files.0.get(&name).cloned().ok_or(StatusCode::NOT_FOUND)
}

fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let data = b"#!/bin/sh\necho hi\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    b.append_data(&mut h, "app/run.sh", &data[..]).unwrap();
    b.into_inner().unwrap()
}

fn targz() -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar_bytes()).unwrap();
    e.finish().unwrap()
}

fn tarzst() -> Vec<u8> {
    zstd::stream::encode_all(&tar_bytes()[..], 3).unwrap()
}

fn zipped() -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts: zip::write::SimpleFileOptions =
        zip::write::SimpleFileOptions::default().unix_permissions(0o644);
    z.add_directory("conf/", opts).unwrap();
    z.start_file("conf/app.toml", opts).unwrap();
    z.write_all(b"port = 1\n").unwrap();
    z.finish().unwrap().into_inner()
}

/// Serves `app` on a free loopback port; its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Serves `files` at `/files/{name}`, counting the downloads of each.
async fn serve_files(files: HashMap<String, Vec<u8>>) -> (String, Files) {
    let files: Files = Arc::new((files, Mutex::new(HashMap::new())));
    let app = Router::new()
        .route("/files/{name}", get(serve_file))
        .with_state(files.clone());
    (serve(app).await, files)
}

async fn server() -> (String, Files) {
    let mut files = HashMap::new();
    files.insert("app.tar.gz".to_string(), targz());
    files.insert("app.tar.zst".to_string(), tarzst());
    files.insert("conf.zip".to_string(), zipped());
    files.insert("tool".to_string(), b"#!/bin/sh\nexit 0\n".to_vec());
    serve_files(files).await
}

fn uri(value: String) -> Uri {
    Uri {
        value,
        executable: None,
        extract: None,
        cache: None,
        output_file: None,
    }
}

fn count(files: &Files, name: &str) -> usize {
    files.1.lock().unwrap().get(name).copied().unwrap_or(0)
}

#[tokio::test]
async fn extracts_archives_and_caches_downloads() {
    let (url, files) = server().await;
    let work = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(work.path().join("cache"));
    let uris = vec![
        uri(format!("{url}/files/app.tar.gz")),
        uri(format!("{url}/files/conf.zip")),
        Uri {
            executable: Some(true),
            output_file: Some("bin/tool".into()),
            ..uri(format!("{url}/files/tool"))
        },
    ];
    for round in 0..2 {
        let sandbox = work.path().join(format!("sb{round}"));
        std::fs::create_dir_all(&sandbox).unwrap();
        fetcher.fetch_all(&uris, &sandbox).await.unwrap();
        let run = sandbox.join("app/run.sh");
        assert_eq!(
            std::fs::read_to_string(&run).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            std::fs::metadata(&run).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_to_string(sandbox.join("conf/app.toml")).unwrap(),
            "port = 1\n"
        );
        let tool = sandbox.join("bin/tool");
        assert_eq!(
            std::fs::metadata(&tool).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
    // The second launch downloaded nothing.
    assert_eq!(count(&files, "app.tar.gz"), 1);
    assert_eq!(count(&files, "conf.zip"), 1);
    assert_eq!(count(&files, "tool"), 1);

    // cache: false always downloads; tar.zst extracts; extract: false keeps the archive.
    let sandbox = work.path().join("sb-nocache");
    std::fs::create_dir_all(&sandbox).unwrap();
    let zst = Uri {
        cache: Some(false),
        ..uri(format!("{url}/files/app.tar.zst"))
    };
    fetcher.fetch(&zst, &sandbox).await.unwrap();
    fetcher.fetch(&zst, &sandbox).await.unwrap();
    assert_eq!(count(&files, "app.tar.zst"), 2);
    assert!(sandbox.join("app/run.sh").is_file());
    let keep = Uri {
        extract: Some(false),
        ..uri(format!("{url}/files/app.tar.gz"))
    };
    fetcher.fetch(&keep, &sandbox).await.unwrap();
    assert!(sandbox.join("app.tar.gz").is_file());
    assert_eq!(count(&files, "app.tar.gz"), 1);
}

#[tokio::test]
async fn local_files_and_failures_name_the_uri() {
    let (url, _files) = server().await;
    let work = tempfile::tempdir().unwrap();
    let allowed = work.path().join("artifacts");
    std::fs::create_dir_all(&allowed).unwrap();
    let fetcher = Fetcher::with_limits(
        work.path().join("cache"),
        drove_agent::fetcher::FetchLimits {
            allow_dirs: vec![allowed.clone()],
            ..Default::default()
        },
    );
    let sandbox = work.path().join("sb");
    std::fs::create_dir_all(&sandbox).unwrap();
    let local = allowed.join("data.txt");
    std::fs::write(&local, "x").unwrap();
    fetcher
        .fetch(&uri(format!("file://{}", local.display())), &sandbox)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(sandbox.join("data.txt")).unwrap(),
        "x"
    );
    fetcher
        .fetch(&uri(local.display().to_string()), &sandbox)
        .await
        .unwrap();

    // A root-only host file, directly or by `..` or a symlink out of the allowed directory,
    // is refused: the agent (root) reads local URIs for tasks.
    let secret = work.path().join("secret");
    std::fs::write(&secret, "root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&secret, allowed.join("link")).unwrap();
    for value in [
        format!("file://{}", secret.display()),
        format!("{}/../secret", allowed.display()),
        format!("{}/link", allowed.display()),
        "file:///etc/shadow".to_string(),
    ] {
        let err = fetcher
            .fetch(&uri(value.clone()), &sandbox)
            .await
            .expect_err(&value);
        assert!(
            err.to_string().contains("outside the --fetch-allow-dir"),
            "{err}"
        );
    }
    assert!(!sandbox.join("secret").exists() && !sandbox.join("shadow").exists());
    let closed = Fetcher::new(work.path().join("cache2"));
    let err = closed
        .fetch(&uri(format!("file://{}", local.display())), &sandbox)
        .await
        .expect_err("no allowed dirs");
    assert!(err.to_string().contains("--fetch-allow-dir"), "{err}");

    let missing = format!("{url}/files/missing.tgz");
    let err = fetcher
        .fetch(&uri(missing.clone()), &sandbox)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&missing), "{err}");
    assert!(err.to_string().contains("404"), "{err}");
    let err = fetcher
        .fetch(&uri("https://example.invalid/x".into()), &sandbox)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("https"), "{err}");
    let err = fetcher
        .fetch(
            &uri(format!("{}/no-such-file", allowed.display())),
            &sandbox,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-file"), "{err}");
}

/// Downloads are bounded: one over the size cap is refused (and leaves nothing in the cache),
/// one slower than the timeout is abandoned.
#[tokio::test]
async fn downloads_over_the_size_cap_or_the_timeout_are_refused() {
    use drove_agent::fetcher::FetchLimits;
    async fn big() -> Vec<u8> {
        vec![7u8; 3 << 20]
    }
    async fn slow() -> &'static str {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        "late"
    }
    let app = Router::new()
        .route("/big.bin", get(big))
        .route("/slow.bin", get(slow));
    let url = serve(app).await;

    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let fetcher = Fetcher::with_limits(
        cache.clone(),
        FetchLimits {
            timeout: std::time::Duration::from_secs(1),
            max_bytes: 1 << 20,
            ..Default::default()
        },
    );
    let sandbox = work.path().join("sb");
    std::fs::create_dir_all(&sandbox).unwrap();

    let err = fetcher
        .fetch_all(&[uri(format!("{url}/big.bin"))], &sandbox)
        .await
        .expect_err("over the cap");
    assert!(err.to_string().contains("limit"), "{err}");
    let leftovers: Vec<_> = walk(&cache);
    assert!(
        leftovers
            .iter()
            .all(|p| !p.to_string_lossy().contains("big.bin")),
        "nothing of the refused download is kept: {leftovers:?}"
    );

    let started = std::time::Instant::now();
    let err = fetcher
        .fetch_all(&[uri(format!("{url}/slow.bin"))], &sandbox)
        .await
        .expect_err("too slow");
    assert!(err.to_string().contains("longer than"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A tar with one entry of the given kind.
fn tar_with(path: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    // `set_path` refuses `..`; write the raw name as a hostile archive would.
    let name = &mut h.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

/// Archives that would reach out of the sandbox, or replace the task's logs, are refused as a
/// whole and write nothing outside the sandbox.
#[tokio::test]
async fn hostile_archives_are_refused() {
    use tar::EntryType;
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "stdout-symlink",
            tar_with("stdout", EntryType::Symlink, Some("/etc/passwd"), b""),
            "log",
        ),
        (
            "stderr-file",
            tar_with("stderr", EntryType::Regular, None, b"forged"),
            "log",
        ),
        (
            "abs-symlink",
            tar_with("etc", EntryType::Symlink, Some("/etc"), b""),
            "outside the sandbox",
        ),
        (
            "climbing-symlink",
            tar_with("a/up", EntryType::Symlink, Some("../../outside"), b""),
            "outside the sandbox",
        ),
        (
            "hardlink",
            tar_with("h", EntryType::Link, Some("/etc/shadow"), b""),
            "outside the sandbox",
        ),
        (
            "dotdot-file",
            tar_with("../outside/x", EntryType::Regular, None, b"escaped"),
            "leaves the sandbox",
        ),
        (
            "device",
            tar_with("dev", EntryType::Char, None, b""),
            "refused",
        ),
    ];
    let mut cases = cases;
    // Links that each stay inside, lexically, but chain out of the sandbox.
    let chain = |entries: &[(&str, &str)]| {
        let mut b = tar::Builder::new(Vec::new());
        for (path, target) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_link_name(target).unwrap();
            h.set_path(path).unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        }
        b.into_inner().unwrap()
    };
    cases.push((
        "chained-links",
        chain(&[("a/b", ".."), ("a/b/c", ".."), ("a/b/c/outside", "x")]),
        "lies under the link a/b",
    ));
    cases.push((
        "link-through-link",
        chain(&[("a/b", ".."), ("up", "a/b/..")]),
        "links through the link a/b",
    ));
    // The link it goes through comes later in the archive.
    cases.push((
        "link-through-a-later-link",
        chain(&[("p", "q/q/q/q/../../../.."), ("q", ".")]),
        "p leads outside the sandbox",
    ));
    let mut files = HashMap::new();
    for (name, bytes, _) in &cases {
        files.insert(format!("{name}.tar"), bytes.clone());
    }
    // A link that stays inside is fine.
    let ok = tar_with("a/b/link", EntryType::Symlink, Some("../c"), b"");
    files.insert("ok.tar".to_string(), ok);
    // A link to the sandbox itself, then a zip writing through it onto the task's log.
    files.insert(
        "here.tar".to_string(),
        tar_with("l", EntryType::Symlink, Some("."), b""),
    );
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts: zip::write::SimpleFileOptions =
        zip::write::SimpleFileOptions::default().unix_permissions(0o644);
    z.start_file("l/stdout", opts).unwrap();
    z.write_all(b"forged").unwrap();
    files.insert("through.zip".to_string(), z.finish().unwrap().into_inner());
    let (url, _) = serve_files(files).await;
    let fetcher = Fetcher::new(work.path().join("cache"));
    for (name, _, why) in &cases {
        let sandbox = work.path().join("sb").join(name);
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(sandbox.join("stdout"), b"").unwrap();
        let err = fetcher
            .fetch(&uri(format!("{url}/files/{name}.tar")), &sandbox)
            .await
            .expect_err(name);
        assert!(err.to_string().contains(why), "{name}: {err}");
        let out = std::fs::symlink_metadata(sandbox.join("stdout")).unwrap();
        assert!(out.is_file(), "{name}: stdout is still the agent's file");
    }
    assert!(walk(&outside).is_empty(), "nothing written outside");
    let sandbox = work.path().join("sb-through");
    std::fs::create_dir_all(&sandbox).unwrap();
    std::fs::write(sandbox.join("stdout"), b"").unwrap();
    fetcher
        .fetch(&uri(format!("{url}/files/here.tar")), &sandbox)
        .await
        .expect("a link to the sandbox itself stays inside");
    let err = fetcher
        .fetch(&uri(format!("{url}/files/through.zip")), &sandbox)
        .await
        .expect_err("a zip entry under a link");
    assert!(err.to_string().contains("lies under the link l"), "{err}");
    assert_eq!(
        std::fs::read(sandbox.join("stdout")).unwrap(),
        b"",
        "the log is the agent's"
    );
    let sandbox = work.path().join("sb-ok");
    std::fs::create_dir_all(&sandbox).unwrap();
    fetcher
        .fetch(&uri(format!("{url}/files/ok.tar")), &sandbox)
        .await
        .unwrap();
    assert!(std::fs::symlink_metadata(sandbox.join("a/b/link"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// The cache stays within its size bound by evicting the least recently used artifacts, and
/// the per-URI lock table does not grow with every URI ever fetched.
#[tokio::test]
async fn the_cache_is_bounded_lru_and_locks_are_pruned() {
    async fn blob(Path(name): Path<String>) -> Vec<u8> {
        vec![name.len() as u8; 400 << 10]
    }
    let app = Router::new().route("/blob/{name}", get(blob));
    let url = serve(app).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let fetcher = Fetcher::with_limits(
        cache.clone(),
        drove_agent::fetcher::FetchLimits {
            cache_max_bytes: 1_250 << 10,
            ..Default::default()
        },
    );
    let sandbox = work.path().join("sb");
    std::fs::create_dir_all(&sandbox).unwrap();
    let size = |dir: &std::path::Path| -> u64 {
        walk(dir)
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    let fetch = |name: &str| {
        let u = uri(format!("{url}/blob/{name}"));
        let (f, sb) = (fetcher.clone(), sandbox.clone());
        async move { f.fetch(&u, &sb).await.unwrap() }
    };
    let cached = || -> Vec<String> {
        walk(&cache)
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    };
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(20));
    // Three fit in 1.25 MiB.
    for name in ["a0", "a1", "a2"] {
        fetch(name).await;
        pause().await;
    }
    fetch("a0").await; // a cache hit: a0 is now the most recently used
    pause().await;
    fetch("a3").await;
    let names = cached();
    assert!(size(&cache) <= 1_250 << 10, "{} bytes", size(&cache));
    assert!(
        !names.contains(&"a1".to_string()),
        "the LRU entry went: {names:?}"
    );
    for kept in ["a0", "a2", "a3"] {
        assert!(names.contains(&kept.to_string()), "{kept} kept: {names:?}");
    }
    assert_eq!(fetcher.lock_count(), 0, "no lock kept once nobody fetches");
}
