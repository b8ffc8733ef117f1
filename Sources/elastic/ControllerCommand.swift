import ArgumentParser
import ElasticCore
import ElasticServices
import Foundation
import ServiceLifecycle

struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "Run the controller daemon: membership, failure detection, bootstrap tokens, training.",
        discussion: """
        SIGTERM or SIGINT shut it down cleanly. Everything it must not lose is in a journal in its data dir: started again after a crash (same command), it continues the run, and workers resume without restarting (docs/durability.md).
        Example: elastic controller --listen 0.0.0.0:7400 --data-dir ./elastic-data --job jobs/w1.json
        """
    )

    @Option(help: ArgumentHelp("The address to listen on (port 0 picks a free port).", valueName: "host:port"))
    var listen: String = "0.0.0.0:7400"

    @Option(name: .customLong("data-dir"), help: "The data dir made by 'elastic certs init'.")
    var dataDirectory: String = "./elastic-data"

    @Option(help: "How often workers heartbeat.")
    var heartbeatInterval: String = "500ms"

    @Option(help: "Silence after which a member is suspect.")
    var suspectAfter: String = "1s"

    @Option(help: "Silence after which a member is declared dead.")
    var deadTimeout: String = "2s"

    @Option(help: "How long a disconnected member may take to reconnect before it is declared dead.")
    var reconnectGrace: String = "500ms"

    @Option(help: "After a restart, how long the members in the journal have to reconnect and resume before they are declared dead.")
    var recoveryGrace: String = "15s"

    @Option(help: "Lifetime of node certificates issued at join.")
    var nodeCertLifetime: String = "7d"

    @Option(help: "A job file (JSON) to train as soon as enough workers have joined.")
    var job: String?

    @Option(help: ArgumentHelp("Start the job from a checkpoint: 'latest' (the newest valid one in the job's checkpoint.directory) or a step directory.", discussion: "A checkpoint that fails verification is reported and the previous valid one is used.", valueName: "latest|dir"))
    var restore: String?

    @Option(help: ArgumentHelp("Where to serve the dashboard (/), its data (/api/state) and /metrics (default: 127.0.0.1:9400; when that port is taken the controller runs without them).", discussion: HTTPOption.help, valueName: "host:port|off"))
    var http: String?

    @Option(name: .customLong("http-allow-host"), help: HTTPOption.allowHostHelp)
    var httpAllowHosts: [String] = []

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard Endpoint(parsing: listen) != nil else {
            throw ValidationError("--listen '\(listen)' is not HOST:PORT (for example 0.0.0.0:7400)")
        }
        try HTTPOption.validate(http)
        _ = try settings()
        _ = try parseDuration(nodeCertLifetime, option: "--node-cert-lifetime")
    }

    func settings() throws -> Membership.Settings {
        var settings = Membership.Settings()
        settings.heartbeatInterval = try positive(heartbeatInterval, "--heartbeat-interval")
        settings.suspectAfter = try positive(suspectAfter, "--suspect-after")
        settings.deadTimeout = try positive(deadTimeout, "--dead-timeout")
        settings.reconnectGrace = try parseDuration(reconnectGrace, option: "--reconnect-grace")
        settings.recoveryGrace = try positive(recoveryGrace, "--recovery-grace")
        if let problem = settings.problem { throw ValidationError(problem) }
        return settings
    }

    private func positive(_ text: String, _ option: String) throws -> Duration {
        let value = try parseDuration(text, option: option)
        guard value > .zero else { throw ValidationError("\(option) must be longer than zero") }
        return value
    }

    func run() async throws {
        let logger = logging.makeLogger(label: "elastic.controller")
        var configuration = ControllerConfiguration(listen: Endpoint(parsing: listen)!, dataDirectory: URL(fileURLWithPath: dataDirectory))
        configuration.membership = try settings()
        configuration.jobFile = job.map { URL(fileURLWithPath: $0) }
        configuration.restore = restore.map { $0 == "latest" || $0.hasPrefix("/") ? $0 : URL(fileURLWithPath: $0).standardizedFileURL.path }
        configuration.nodeCertificateLifetime = Double(try parseDuration(nodeCertLifetime, option: "--node-cert-lifetime").milliseconds) / 1000
        configuration.http = HTTPOption.settings(http, default: Endpoint(host: "127.0.0.1", port: 9400), allowedHosts: httpAllowHosts)
        let service = ControllerService(configuration: configuration, logger: logger) { bound in
            FileHandle.standardOutput.write(Data("elastic controller listening on \(bound)\n".utf8))
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
