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
use drove_agent::sandbox::TaskUser;
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

async fn server() -> (String, Files) {
    let mut files = HashMap::new();
    files.insert("app.tar.gz".to_string(), targz());
    files.insert("app.tar.zst".to_string(), tarzst());
    files.insert("conf.zip".to_string(), zipped());
    files.insert("tool".to_string(), b"#!/bin/sh\nexit 0\n".to_vec());
    let files: Files = Arc::new((files, Mutex::new(HashMap::new())));
    let app = Router::new()
        .route("/files/{name}", get(serve_file))
        .with_state(files.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, files)
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
    let user = TaskUser::lookup(&TaskUser::default_name()).unwrap();
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
        fetcher.fetch_all(&uris, &sandbox, &user).await.unwrap();
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
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&run).unwrap().uid(), user.uid);
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
    fetcher.fetch(&zst, &sandbox, &user).await.unwrap();
    fetcher.fetch(&zst, &sandbox, &user).await.unwrap();
    assert_eq!(count(&files, "app.tar.zst"), 2);
    assert!(sandbox.join("app/run.sh").is_file());
    let keep = Uri {
        extract: Some(false),
        ..uri(format!("{url}/files/app.tar.gz"))
    };
    fetcher.fetch(&keep, &sandbox, &user).await.unwrap();
    assert!(sandbox.join("app.tar.gz").is_file());
    assert_eq!(count(&files, "app.tar.gz"), 1);
}

#[tokio::test]
async fn local_files_and_failures_name_the_uri() {
    let (url, _files) = server().await;
    let work = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(work.path().join("cache"));
    let user = TaskUser::lookup(&TaskUser::default_name()).unwrap();
    let sandbox = work.path().join("sb");
    std::fs::create_dir_all(&sandbox).unwrap();
    let local = work.path().join("data.txt");
    std::fs::write(&local, "x").unwrap();
    fetcher
        .fetch(&uri(format!("file://{}", local.display())), &sandbox, &user)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(sandbox.join("data.txt")).unwrap(),
        "x"
    );
    fetcher
        .fetch(&uri(local.display().to_string()), &sandbox, &user)
        .await
        .unwrap();

    let missing = format!("{url}/files/missing.tgz");
    let err = fetcher
        .fetch(&uri(missing.clone()), &sandbox, &user)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&missing), "{err}");
    assert!(err.to_string().contains("404"), "{err}");
    let err = fetcher
        .fetch(&uri("https://example.invalid/x".into()), &sandbox, &user)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("https"), "{err}");
    let err = fetcher
        .fetch(&uri("/no/such/file".into()), &sandbox, &user)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/file"), "{err}");
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let fetcher = Fetcher::with_limits(
        cache.clone(),
        FetchLimits {
            timeout: std::time::Duration::from_secs(1),
            max_bytes: 1 << 20,
        },
    );
    let user = TaskUser::lookup(&TaskUser::default_name()).unwrap();
    let sandbox = work.path().join("sb");
    std::fs::create_dir_all(&sandbox).unwrap();

    let err = fetcher
        .fetch_all(&[uri(format!("{url}/big.bin"))], &sandbox, &user)
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
        .fetch_all(&[uri(format!("{url}/slow.bin"))], &sandbox, &user)
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
