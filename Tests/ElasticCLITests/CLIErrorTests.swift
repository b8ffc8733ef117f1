import Foundation
import Testing

/// Bad arguments and unusable environments give one clear `error:` line and a non-zero exit
/// (issue 2, test 4).
@Suite(.timeLimit(.minutes(2)))
struct CLIErrorTests {
    static let zeroHash = "sha256:" + String(repeating: "0", count: 64)
    static let token = "abcdef.0123456789abcdef"

    struct Case: Sendable, CustomTestStringConvertible {
        let arguments: [String]
        let expected: String
        var testDescription: String { arguments.joined(separator: " ") }
    }

    static let cases: [Case] = [
        Case(arguments: ["join", "127.0.0.1:7400", "--token", "not-a-token", "--ca-hash", zeroHash], expected: "malformed token"),
        Case(arguments: ["join", "127.0.0.1:7400", "--token", "ABCDEF.0123456789abcdef", "--ca-hash", zeroHash], expected: "malformed token"),
        Case(arguments: ["join", "127.0.0.1", "--token", token, "--ca-hash", zeroHash], expected: "is not HOST:PORT"),
        Case(arguments: ["join", "127.0.0.1:7400", "--token", token, "--ca-hash", "sha256:abc"], expected: "--ca-hash must be sha256:"),
        Case(arguments: ["join", "127.0.0.1:7400", "--name", "Bad_Name"], expected: "--name 'Bad_Name'"),
        Case(arguments: ["join", "127.0.0.1:7400", "--data-dir", "/etc/hostname/worker"], expected: "is a file, not a directory"),
        Case(arguments: ["join", "127.0.0.1:7400", "--data-dir", "fresh-worker"], expected: "pass --token and --ca-hash"),
        Case(arguments: ["controller", "--data-dir", "/nonexistent/elastic", "--listen", "127.0.0.1:0"], expected: "does not exist"),
        Case(arguments: ["controller", "--listen", "nowhere"], expected: "--listen 'nowhere' is not HOST:PORT"),
        Case(arguments: ["controller", "--dead-timeout", "soon"], expected: "--dead-timeout 'soon' is not a duration"),
        Case(arguments: ["controller", "--heartbeat-interval", "3s", "--dead-timeout", "2s"], expected: "must be shorter than the dead timeout"),
        Case(arguments: ["status", "--data-dir", "/nonexistent/elastic"], expected: "cannot load the admin certificate"),
        Case(arguments: ["status", "--controller", "localhost"], expected: "is not HOST:PORT"),
        Case(arguments: ["token", "create", "--ttl", "forever"], expected: "--ttl 'forever' is not a duration"),
        Case(arguments: ["no-such-command"], expected: "Unexpected argument"),
    ]

    @Test(arguments: cases)
    func badArgumentsGiveOneErrorLine(_ testCase: Case) async throws {
        let directory = try makeTemporaryDirectory("cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try await CLI.run(testCase.arguments, in: directory)
        #expect(result.status != 0)
        expectOneErrorLine(result.stderr, containing: testCase.expected)
    }

    /// An unknown host fails on resolution with a sentence that names the host. Run without a
    /// network (a network namespace of its own) so that no DNS query leaves this machine.
    @Test func unknownHost() async throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else {
            print("skipped: needs root and unshare to run without a network")
            return
        }
        let directory = try makeTemporaryDirectory("cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        for arguments in [
            ["join", "no-such-host.invalid:7400", "--token", Self.token, "--ca-hash", Self.zeroHash, "--data-dir", "w"],
            ["status", "--controller", "no-such-host.invalid:7400", "--data-dir", "c"],
        ] {
            if arguments[0] == "status" {
                _ = try await CLI.run(["certs", "init", "--dir", "c"], in: directory)
            }
            let result = try await CLI.run(arguments, in: directory, prefix: ["/usr/bin/unshare", "--net"])
            #expect(result.status != 0)
            expectOneErrorLine(result.stderr, containing: "cannot resolve host 'no-such-host.invalid'")
        }
    }

    @Test func refusedConnectionSaysWhatToCheck() async throws {
        let directory = try makeTemporaryDirectory("cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        // A port nothing listens on: bind one, note it, close it.
        let socket = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
        let port = UInt16(bigEndian: address.sin_port)
        close(socket)
        let result = try await CLI.run(["join", "127.0.0.1:\(port)", "--token", Self.token, "--ca-hash", Self.zeroHash, "--data-dir", "w"], in: directory)
        #expect(result.status != 0)
        expectOneErrorLine(result.stderr, containing: "connection refused by 127.0.0.1:\(port)")
    }

    /// Every command and subcommand, found by walking the SUBCOMMANDS sections of `--help` from
    /// the root (so a new command cannot be missed), prints an example.
    @Test func helpHasAnExampleForEveryCommand() async throws {
        let directory = try makeTemporaryDirectory("cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        var queue: [[String]] = [[]]
        var visited: [[String]] = []
        while let command = queue.first {
            queue.removeFirst()
            visited.append(command)
            let result = try await CLI.run(command + ["--help"], in: directory)
            #expect(result.status == 0, "\(command) --help exited with \(result.status)")
            #expect(result.stdout.contains("Example"), "'elastic \(command.joined(separator: " "))' --help has no example:\n\(result.stdout)")
            queue += Self.subcommands(inHelp: result.stdout).map { command + [$0] }
        }
        // The walk found the tree, not just the root.
        #expect(visited.count >= 20, "found only \(visited)")
        for expected in [["checkpoint", "copy"], ["token", "revoke"], ["data", "import"], ["bench", "allreduce"], ["join"]] {
            #expect(visited.contains(expected), "\(expected) was not found from the root's --help")
        }
    }

    /// The commands a script reads have --json.
    @Test func scriptableCommandsHaveJSON() async throws {
        let directory = try makeTemporaryDirectory("cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        for command in [["status"], ["token", "list"], ["checkpoint", "list"], ["checkpoint", "inspect"], ["checkpoint", "verify"], ["data", "inspect"]] {
            let result = try await CLI.run(command + ["--help"], in: directory)
            #expect(result.stdout.contains("--json"), "\(command) has no --json")
        }
    }

    /// The names under "SUBCOMMANDS:" in ArgumentParser's help (not the synthesized `help`).
    static func subcommands(inHelp help: String) -> [String] {
        var names: [String] = []
        var inSection = false
        for line in help.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("SUBCOMMANDS:") { inSection = true; continue }
            guard inSection else { continue }
            if line.trimmingCharacters(in: .whitespaces).isEmpty { break }
            // "  name      abstract"; continuation lines of a long abstract are indented further.
            guard line.hasPrefix("  "), let first = line.dropFirst(2).first, first != " " else { continue }
            let name = String(line.dropFirst(2).prefix { $0 != " " })
            if name != "help" { names.append(name) }
        }
        return names
    }
}

private func expectOneErrorLine(_ stderr: String, containing fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let errors = stderr.split(separator: "\n").filter { $0.hasPrefix("error: ") }
    #expect(errors.count == 1, "expected one 'error:' line, got:\n\(stderr)", sourceLocation: sourceLocation)
    #expect(errors.first?.contains(fragment) == true, "expected '\(fragment)' in:\n\(stderr)", sourceLocation: sourceLocation)
}
