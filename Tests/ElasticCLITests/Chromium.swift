import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Headless Chromium (Debian's `chromium`) for the dashboard test: each run in a process group
/// of its own with its own profile, HOME and caches in a temporary directory; ended by its
/// process group id at the deadline (the browser's helpers are in that group).
enum Chromium {
    static let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium"]

    /// The browser, or an error that says how to install it.
    static func binary() throws -> String {
        if let path = ProcessInfo.processInfo.environment["ELASTIC_CHROMIUM"], !path.isEmpty { return path }
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) { return found }
        throw HarnessError("""
            chromium is not installed, and the dashboard test needs it: install it with \
            'sudo apt-get install -y chromium' (scripts/test.sh does it when run as root), or point \
            ELASTIC_CHROMIUM at a Chromium or Chrome binary
            """)
    }

    struct Run {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs `chromium --headless … arguments` with its output in files of `directory`; kills its
    /// process group after `deadline`.
    static func run(_ arguments: [String], in directory: URL, deadline: Duration = .seconds(90)) async throws -> Run {
        let binary = try binary()
        let label = UUID().uuidString.prefix(8)
        let profile = directory.appendingPathComponent("chromium-\(label)")
        try FileManager.default.createDirectory(at: profile, withIntermediateDirectories: true)
        let stdoutPath = directory.appendingPathComponent("chromium-\(label).out").path
        let stderrPath = directory.appendingPathComponent("chromium-\(label).err").path
        let argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                    "--no-default-browser-check", "--disable-extensions", "--disable-background-networking", "--disable-sync",
                    "--disable-component-update", "--no-proxy-server", "--hide-scrollbars", "--mute-audio",
                    "--user-data-dir=\(profile.appendingPathComponent("profile").path)"] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = profile.path
        environment["XDG_CONFIG_HOME"] = profile.appendingPathComponent("config").path
        environment["XDG_CACHE_HOME"] = profile.appendingPathComponent("cache").path
        let pid = try spawn(argv, environment: environment, stdout: stdoutPath, stderr: stderrPath)

        let clock = ContinuousClock()
        let end = clock.now + deadline
        var status: Int32 = 0
        while true {
            let waited = waitpid(pid, &status, WNOHANG)
            if waited == pid { break }
            if waited < 0 { throw HarnessError("waitpid(\(pid)) failed: errno \(errno)") }
            if clock.now > end {
                // The group id is the browser's pid: its helpers go with it.
                kill(-pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                throw HarnessError("chromium (pid \(pid)) did not finish within \(deadline); killed. stderr:\n\(read(stderrPath).suffix(4000))")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        // Helpers that outlived the browser.
        kill(-pid, SIGKILL)
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Run(status: code, stdout: read(stdoutPath), stderr: read(stderrPath))
    }

    private static func read(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    /// posix_spawn in a new process group, stdout and stderr to files.
    private static func spawn(_ argv: [String], environment: [String: String], stdout: String, stderr: String) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let cArguments = argv.map { strdup($0) } + [nil]
        let cEnvironment = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArguments.forEach { free($0) }
            cEnvironment.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0], &actions, &attributes, cArguments, cEnvironment)
        guard result == 0 else { throw HarnessError("cannot start \(argv[0]): \(String(cString: strerror(result)))") }
        return pid
    }
}

/// The size of a PNG from its IHDR chunk, or nil when the bytes are not a PNG.
func pngSize(_ bytes: [UInt8]) -> (width: Int, height: Int)? {
    let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    guard bytes.count >= 24, Array(bytes[0..<8]) == signature, Array(bytes[12..<16]) == Array("IHDR".utf8) else { return nil }
    func be32(_ at: Int) -> Int { bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
    return (be32(16), be32(20))
}
