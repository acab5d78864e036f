//! The Helm v4 engine, loaded from `libhelm_sdkpy.so` (the Go `c-shared` library in the
//! `helm-sdkpy` wheel), behind a safe Rust surface.
//!
//! Why `libloading` rather than linking: the library is a 120 MB artefact fetched at run time
//! by `scripts/fetch-tools.sh`, not something the workspace can link against at build time;
//! loading it when a command runs keeps `cargo build` independent of it and lets the path be
//! chosen per machine. The ABI is plain C: strings in are NUL-terminated UTF-8, results come
//! back through a `char**` that must be released with `helm_sdkpy_free`, and a non-zero return
//! code means failure, with the message in a per-thread slot read by `helm_sdkpy_last_error`
//! (owned by the library, valid until the next call on the same thread). Every call here is
//! made from the calling thread and the message is copied at once.
//!
//! Nothing else may call into the library: all `unsafe` lives in this module. The library's
//! rollback entry point is not bound: it fails on every call (see `rollback`).

use std::ffi::{CStr, CString, c_char, c_int, c_ulonglong, c_void};
use std::path::{Path, PathBuf};

/// Return code the library uses for "release not found".
const ERR_RELEASE_NOT_FOUND: c_int = -2;

/// Environment variable naming the library explicitly.
pub const LIBRARY_ENV: &str = "HELM_ENGINE_LIBRARY";
/// File name of the engine library.
pub const LIBRARY_FILE: &str = "libhelm_sdkpy.so";

/// What can go wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The shared library could not be found or loaded.
    #[error("cannot load the Helm engine library `{path}`: {reason}")]
    Load { path: PathBuf, reason: String },
    /// The library lacks a symbol this CLI needs (wrong or corrupt library).
    #[error("the Helm engine library lacks `{symbol}`: {reason}")]
    Symbol { symbol: String, reason: String },
    /// An argument contained a NUL byte and cannot cross the C boundary.
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    /// The engine reported that the release does not exist.
    #[error("{0}")]
    ReleaseNotFound(String),
    /// Any other failure the engine reported.
    #[error("{0}")]
    Failed(String),
    /// The engine returned text that is not valid UTF-8.
    #[error("the Helm engine returned invalid UTF-8")]
    Utf8,
}

type ConfigCreate = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const c_char,
    *const c_char,
    *mut c_ulonglong,
) -> c_int;
type ConfigDestroy = unsafe extern "C" fn(c_ulonglong);
type LastError = unsafe extern "C" fn() -> *const c_char;
type Free = unsafe extern "C" fn(*mut c_void);
type VersionString = unsafe extern "C" fn() -> *const c_char;
type ReleaseAction = unsafe extern "C" fn(
    c_ulonglong,
    *const c_char,
    *const c_char,
    *const c_char,
    *const c_char,
    *const c_char,
    *mut *mut c_char,
) -> c_int;
type NameAction = unsafe extern "C" fn(c_ulonglong, *const c_char, *mut *mut c_char) -> c_int;
type NameFlagAction =
    unsafe extern "C" fn(c_ulonglong, *const c_char, c_int, *mut *mut c_char) -> c_int;
type Uninstall =
    unsafe extern "C" fn(c_ulonglong, *const c_char, c_int, c_int, *mut *mut c_char) -> c_int;
type List = unsafe extern "C" fn(c_ulonglong, c_int, *mut *mut c_char) -> c_int;

/// The loaded library. Function pointers are resolved once, at load time, so a wrong library
/// fails before any cluster is touched.
pub struct Engine {
    // Kept alive for as long as the function pointers below are used.
    _library: libloading::Library,
    config_create: ConfigCreate,
    config_destroy: ConfigDestroy,
    last_error: LastError,
    free: Free,
    version_string: VersionString,
    install: ReleaseAction,
    upgrade: ReleaseAction,
    uninstall: Uninstall,
    list: List,
    status: NameAction,
    history: NameAction,
    lint: NameAction,
    get_values: NameFlagAction,
}

/// Where the library is looked for: `$HELM_ENGINE_LIBRARY`, then `<exe dir>/../lib/`, then
/// next to the executable.
pub fn locate_library() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(explicit) = std::env::var_os(LIBRARY_ENV) {
        candidates.push(PathBuf::from(explicit));
        return candidates;
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("../lib").join(LIBRARY_FILE));
        candidates.push(dir.join(LIBRARY_FILE));
    }
    candidates
}

fn cstring(what: &'static str, value: &str) -> Result<CString, EngineError> {
    CString::new(value).map_err(|_| EngineError::Nul { what })
}

fn optional_ptr(value: &Option<CString>) -> *const c_char {
    value.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

macro_rules! symbol {
    ($library:expr, $name:literal) => {{
        // SAFETY: the type annotation at the use site matches the C prototype published in
        // the library's header (`libhelm_sdkpy.h`).
        let symbol = unsafe { $library.get(concat!($name, "\0").as_bytes()) }.map_err(|error| {
            EngineError::Symbol {
                symbol: $name.to_string(),
                reason: error.to_string(),
            }
        })?;
        *symbol
    }};
}

impl Engine {
    /// Loads the library from the first candidate that exists.
    pub fn load_default() -> Result<Self, EngineError> {
        let candidates = locate_library();
        let found = candidates.iter().find(|path| path.exists());
        match found {
            Some(path) => Self::load(path),
            None => Err(EngineError::Load {
                path: candidates
                    .first()
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(LIBRARY_FILE)),
                reason: format!(
                    "not found (looked in {}); run scripts/fetch-tools.sh or set {LIBRARY_ENV}",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// Loads the library at `path`.
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        // SAFETY: loading runs the Go runtime's initialisers, which have no preconditions
        // beyond being loaded once per process; this CLI loads it once.
        let library =
            unsafe { libloading::Library::new(path) }.map_err(|error| EngineError::Load {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?;
        Ok(Self {
            config_create: symbol!(library, "helm_sdkpy_config_create"),
            config_destroy: symbol!(library, "helm_sdkpy_config_destroy"),
            last_error: symbol!(library, "helm_sdkpy_last_error"),
            free: symbol!(library, "helm_sdkpy_free"),
            version_string: symbol!(library, "helm_sdkpy_version_string"),
            install: symbol!(library, "helm_sdkpy_install"),
            upgrade: symbol!(library, "helm_sdkpy_upgrade"),
            uninstall: symbol!(library, "helm_sdkpy_uninstall"),
            list: symbol!(library, "helm_sdkpy_list"),
            status: symbol!(library, "helm_sdkpy_status"),
            history: symbol!(library, "helm_sdkpy_history"),
            lint: symbol!(library, "helm_sdkpy_lint"),
            get_values: symbol!(library, "helm_sdkpy_get_values"),
            _library: library,
        })
    }

    /// The engine's own version string (e.g. `helm-sdkpy-v0.1.32`).
    pub fn version(&self) -> String {
        // SAFETY: returns a static, library-owned string or NULL.
        let pointer = unsafe { (self.version_string)() };
        if pointer.is_null() {
            return "unknown".to_string();
        }
        // SAFETY: non-null, NUL-terminated, owned by the library; copied at once.
        unsafe { CStr::from_ptr(pointer) }
            .to_string_lossy()
            .into_owned()
    }

    /// Opens a connection configuration for `namespace`, reading the kubeconfig at
    /// `kubeconfig` (or `$KUBECONFIG` / `~/.kube/config` when `None`) and using `context`
    /// (or the current context when `None`).
    pub fn connect(
        &self,
        namespace: &str,
        kubeconfig: Option<&str>,
        context: Option<&str>,
    ) -> Result<Connection<'_>, EngineError> {
        let namespace = cstring("the namespace", namespace)?;
        let kubeconfig = kubeconfig
            .map(|k| cstring("the kubeconfig path", k))
            .transpose()?;
        let context = context
            .map(|c| cstring("the kube context", c))
            .transpose()?;
        let options = cstring("options", "{}")?;
        let mut handle: c_ulonglong = 0;
        // SAFETY: every pointer is a live NUL-terminated string or NULL (allowed for the
        // kubeconfig and context); `handle` is a valid out-pointer.
        let code = unsafe {
            (self.config_create)(
                namespace.as_ptr(),
                optional_ptr(&kubeconfig),
                optional_ptr(&context),
                options.as_ptr(),
                &mut handle,
            )
        };
        self.check(code)?;
        Ok(Connection {
            engine: self,
            handle,
        })
    }

    fn check(&self, code: c_int) -> Result<(), EngineError> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: returns the calling thread's error slot or NULL; copied before any other
        // call into the library.
        let pointer = unsafe { (self.last_error)() };
        let message = if pointer.is_null() {
            format!("the Helm engine failed with code {code} and no message")
        } else {
            // SAFETY: non-null, NUL-terminated, library-owned; not freed here.
            unsafe { CStr::from_ptr(pointer) }
                .to_string_lossy()
                .into_owned()
        };
        if code == ERR_RELEASE_NOT_FOUND {
            Err(EngineError::ReleaseNotFound(message))
        } else {
            Err(EngineError::Failed(message))
        }
    }

    /// Takes ownership of a result string, copying it and releasing the library's buffer.
    fn take(&self, pointer: *mut c_char) -> Result<String, EngineError> {
        if pointer.is_null() {
            return Ok(String::new());
        }
        // SAFETY: the library allocated this NUL-terminated buffer for us.
        let copied = unsafe { CStr::from_ptr(pointer) }.to_bytes().to_vec();
        // SAFETY: released exactly once, with the library's own allocator.
        unsafe { (self.free)(pointer.cast()) };
        String::from_utf8(copied).map_err(|_| EngineError::Utf8)
    }
}

/// Options of install/upgrade, serialised as the engine's `options_json`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReleaseOptions {
    /// Upgrade only: install when the release does not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install: Option<bool>,
    pub create_namespace: bool,
    pub wait: bool,
    pub timeout_seconds: u64,
    pub wait_for_jobs: bool,
    /// Upgrade only: revisions kept (0 = all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_history: Option<u32>,
    pub server_side_apply: String,
    pub force_conflicts: bool,
    pub disable_openapi_validation: bool,
    pub skip_schema_validation: bool,
    pub rollback_on_failure: bool,
    pub take_ownership: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_on_fail: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_values: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse_values: Option<bool>,
}

/// A cluster connection (the engine's configuration handle); destroyed on drop.
pub struct Connection<'engine> {
    engine: &'engine Engine,
    handle: c_ulonglong,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from config_create and is destroyed once.
        unsafe { (self.engine.config_destroy)(self.handle) };
    }
}

impl Connection<'_> {
    fn release_action(
        &self,
        function: ReleaseAction,
        release: &str,
        chart: &str,
        values: &serde_json::Value,
        version: Option<&str>,
        options: &ReleaseOptions,
    ) -> Result<String, EngineError> {
        let release = cstring("the release name", release)?;
        let chart = cstring("the chart path", chart)?;
        let values = cstring("the values", &values.to_string())?;
        let version = cstring("the chart version", version.unwrap_or(""))?;
        let options = serde_json::to_string(options)
            .map_err(|error| EngineError::Failed(format!("cannot encode options: {error}")))?;
        let options = cstring("options", &options)?;
        let mut result: *mut c_char = std::ptr::null_mut();
        // SAFETY: all pointers are live NUL-terminated strings; `result` is a valid
        // out-pointer whose buffer `take` releases.
        let code = unsafe {
            function(
                self.handle,
                release.as_ptr(),
                chart.as_ptr(),
                values.as_ptr(),
                version.as_ptr(),
                options.as_ptr(),
                &mut result,
            )
        };
        self.finish(code, result)
    }

    fn finish(&self, code: c_int, result: *mut c_char) -> Result<String, EngineError> {
        // Take the buffer first so that it is released whatever the code says.
        let text = self.engine.take(result);
        self.engine.check(code)?;
        text
    }

    /// Installs `chart` as `release`; returns the release as JSON text.
    pub fn install(
        &self,
        release: &str,
        chart: &str,
        values: &serde_json::Value,
        version: Option<&str>,
        options: &ReleaseOptions,
    ) -> Result<String, EngineError> {
        self.release_action(
            self.engine.install,
            release,
            chart,
            values,
            version,
            options,
        )
    }

    /// Upgrades `release` to `chart` (installing it with `options.install`).
    pub fn upgrade(
        &self,
        release: &str,
        chart: &str,
        values: &serde_json::Value,
        version: Option<&str>,
        options: &ReleaseOptions,
    ) -> Result<String, EngineError> {
        self.release_action(
            self.engine.upgrade,
            release,
            chart,
            values,
            version,
            options,
        )
    }

    fn name_action(&self, function: NameAction, name: &str) -> Result<String, EngineError> {
        let name = cstring("the name", name)?;
        let mut result: *mut c_char = std::ptr::null_mut();
        // SAFETY: live NUL-terminated string; valid out-pointer released by `finish`.
        let code = unsafe { function(self.handle, name.as_ptr(), &mut result) };
        self.finish(code, result)
    }

    fn name_flag_action(
        &self,
        function: NameFlagAction,
        name: &str,
        flag: c_int,
    ) -> Result<String, EngineError> {
        let name = cstring("the release name", name)?;
        let mut result: *mut c_char = std::ptr::null_mut();
        // SAFETY: as in `name_action`.
        let code = unsafe { function(self.handle, name.as_ptr(), flag, &mut result) };
        self.finish(code, result)
    }

    /// Status of the latest revision, as release JSON.
    pub fn status(&self, release: &str) -> Result<String, EngineError> {
        self.name_action(self.engine.status, release)
    }

    /// Every stored revision, as a JSON array of releases.
    pub fn history(&self, release: &str) -> Result<String, EngineError> {
        self.name_action(self.engine.history, release)
    }

    /// Lints the chart at `chart`; returns the engine's lint report JSON.
    pub fn lint(&self, chart: &str) -> Result<String, EngineError> {
        self.name_action(self.engine.lint, chart)
    }

    /// User-supplied values (`all` = merged with the chart's defaults).
    pub fn get_values(&self, release: &str, all: bool) -> Result<String, EngineError> {
        self.name_flag_action(self.engine.get_values, release, c_int::from(all))
    }

    /// Uninstalls `release`.
    pub fn uninstall(
        &self,
        release: &str,
        wait: bool,
        timeout_seconds: u64,
    ) -> Result<String, EngineError> {
        let release = cstring("the release name", release)?;
        let timeout = c_int::try_from(timeout_seconds).unwrap_or(c_int::MAX);
        let mut result: *mut c_char = std::ptr::null_mut();
        // SAFETY: as in `name_action`.
        let code = unsafe {
            (self.engine.uninstall)(
                self.handle,
                release.as_ptr(),
                c_int::from(wait),
                timeout,
                &mut result,
            )
        };
        self.finish(code, result)
    }

    /// Releases in the namespace (`all` includes failed/uninstalling/pending ones).
    pub fn list(&self, all: bool) -> Result<String, EngineError> {
        let mut result: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid out-pointer released by `finish`.
        let code = unsafe { (self.engine.list)(self.handle, c_int::from(all), &mut result) };
        self.finish(code, result)
    }
}
