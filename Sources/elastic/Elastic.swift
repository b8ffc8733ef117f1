import ArgumentParser
import ElasticServices
import Foundation
import Logging

@main
struct Elastic: AsyncParsableCommand {
    /// Runs the command; an error is printed as one line (`error: …`) with a non-zero exit,
    /// help and version requests as ArgumentParser prints them.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .success || error is CleanExit {
                exit(withError: error)
            }
            // A command that already printed what went wrong (a verify report) only sets the status.
            if let exit = error as? ExitCode {
                Foundation.exit(exit.rawValue)
            }
            let message = Self.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            FileHandle.standardError.write(Data("error: \(message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message)\n".utf8))
            Foundation.exit(code.rawValue == 0 ? 1 : code.rawValue)
        }
    }

    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "elastic",
        abstract: "A fault-tolerant, elastic training cluster manager.",
        discussion: """
        Example: a cluster on one host
          elastic certs init --dir ./elastic-data
          elastic controller --listen 0.0.0.0:7400 --data-dir ./elastic-data &
          elastic token create --data-dir ./elastic-data
          elastic join 127.0.0.1:7400 --token <token> --ca-hash <hash> --data-dir ./worker-1
          elastic status --data-dir ./elastic-data
        """,
        version: version,
        subcommands: [Certs.self, ControllerCommand.self, Join.self, Token.self, Node.self, Status.self, DataCommand.self, Train.self, CheckpointCommand.self, Bench.self]
    )
}

/// Options every long-running command shares.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown --log-level '\(logLevel)'; use one of trace, debug, info, notice, warning, error")
        }
    }

    func makeLogger(label: String) -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }
}

/// The controller's data dir and address, for the admin commands.
struct AdminOptions: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "The controller's data dir; its pki/admin.pem authenticates this command.")
    var dataDirectory: String = "./elastic-data"

    @Option(help: ArgumentHelp("The controller's address.", discussion: "Default: the address the running controller recorded in its data dir.", valueName: "host:port"))
    var controller: String?

    func validate() throws {
        if let controller, Endpoint(parsing: controller) == nil {
            throw ValidationError("--controller '\(controller)' is not HOST:PORT (for example 127.0.0.1:7400)")
        }
    }

    func client() throws -> AdminClient {
        try AdminClient(dataDirectory: URL(fileURLWithPath: dataDirectory), controller: controller.flatMap(Endpoint.init(parsing:)))
    }
}

/// Parses a duration option or says what it expects.
func parseDuration(_ text: String, option: String) throws -> Duration {
    guard let value = Duration(parsing: text) else {
        throw ValidationError("\(option) '\(text)' is not a duration; write a number and a unit, like 500ms, 2s, 30m, 1h or 7d")
    }
    return value
}
