import ArgumentParser
import ElasticCore
import ElasticServices
import Foundation
import ServiceLifecycle

struct Join: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a worker: join the cluster at HOST:PORT and stay a member until stopped.",
        discussion: """
        The first join needs a token and the CA hash ('elastic token create' prints both); it stores a node \
        certificate in the data dir, and later runs with the same data dir rejoin without a token.
        SIGTERM or SIGINT leave the cluster cleanly.
        Example: elastic join 10.0.0.5:7400 --token abcdef.0123456789abcdef --ca-hash sha256:… --data-dir ./worker-1
        """
    )

    @Argument(help: ArgumentHelp("The controller's address.", valueName: "host:port"))
    var controller: String

    @Option(help: ArgumentHelp("A bootstrap token <id>.<secret> (first join only).", discussion: "It shows in the process list: prefer --token-file or the ELASTIC_TOKEN environment variable."))
    var token: String?

    @Option(help: ArgumentHelp("A file whose first line is the bootstrap token (first join only).", valueName: "path"))
    var tokenFile: String?

    @Option(help: "The CA hash sha256:<hex> to pin (first join only).")
    var caHash: String?

    @Option(help: "This node's name: lowercase letters, digits and '-' (default: host name and a random suffix).")
    var name: String?

    @Option(name: .customLong("data-dir"), help: "Where this worker keeps its key and certificate.")
    var dataDirectory: String = "./elastic-worker"

    @Option(help: ArgumentHelp("Where the data plane listens for peers (port 0: any free port).", valueName: "host:port"))
    var dataListen: String = "0.0.0.0:0"

    @Option(help: "The host name or address peers dial for the data plane (default: this side's address towards the controller).")
    var dataAdvertise: String?

    @Option(help: "Threads for matrix products (OpenBLAS); 1 suits several workers per host.")
    var computeThreads: Int = 1

    @Option(help: ArgumentHelp("Where to serve this worker's /metrics (default: 127.0.0.1:0, a free loopback port, written to <data-dir>/http.address).", discussion: HTTPOption.help, valueName: "host:port|off"))
    var http: String?

    @Option(name: .customLong("http-allow-host"), help: HTTPOption.allowHostHelp)
    var httpAllowHosts: [String] = []

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard Endpoint(parsing: controller) != nil else {
            throw ValidationError("'\(controller)' is not HOST:PORT (for example 10.0.0.5:7400)")
        }
        try HTTPOption.validate(http)
        if token != nil && tokenFile != nil {
            throw ValidationError("give the token once: --token or --token-file, not both")
        }
        if let token = try bootstrapToken(), case .failure(let error) = BootstrapTokens.parse(token) {
            throw ValidationError(error.explanation)
        }
        if let caHash, !(caHash.hasPrefix("sha256:") && caHash.count == 71 && caHash.dropFirst(7).allSatisfy(\.isHexDigit)) {
            throw ValidationError("--ca-hash must be sha256: followed by 64 hex digits, as printed by 'elastic certs init' or 'elastic certs hash'")
        }
        guard computeThreads >= 1 else { throw ValidationError("--compute-threads must be at least 1") }
        guard Endpoint(parsing: dataListen) != nil else {
            throw ValidationError("--data-listen '\(dataListen)' is not HOST:PORT (for example 0.0.0.0:0)")
        }
        if let name, let problem = NodeID.problem(with: name) {
            throw ValidationError("--name '\(name)': \(problem)")
        }
    }

    func run() async throws {
        let logger = logging.makeLogger(label: "elastic.worker")
        let endpoint = Endpoint(parsing: controller)!
        let directory = URL(fileURLWithPath: dataDirectory)
        try DataDirectory.prepare(directory)
        // One worker per data dir: two would present the same node certificate.
        let dataLock = try DataDirectoryLock.acquire(directory, holder: name.map { "worker \($0)" } ?? "worker")
        defer { dataLock.release() }
        let configuration = try await WorkerConfiguration.prepare(
            controller: endpoint, token: try bootstrapToken(), caHash: caHash, name: name ?? defaultName(),
            dataDirectory: directory, softwareVersion: Elastic.version, computeThreads: computeThreads, logger: logger)
        var worker = configuration
        worker.dataListen = Endpoint(parsing: dataListen)!
        worker.dataAdvertiseHost = dataAdvertise
        worker.http = HTTPOption.settings(http, default: Endpoint(host: "127.0.0.1", port: 0), allowedHosts: httpAllowHosts)
        worker.httpAddressFile = HTTPListenSettings.addressFile(dataDirectory: directory)
        let service = WorkerService(configuration: worker, logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// The bootstrap token: --token, the first line of --token-file, or $ELASTIC_TOKEN.
    func bootstrapToken() throws -> String? {
        if let token { return token }
        if let tokenFile {
            guard let data = FileManager.default.contents(atPath: tokenFile) else {
                throw ValidationError("cannot read --token-file \(tokenFile)")
            }
            let line = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
            return line.trimmingCharacters(in: .whitespaces)
        }
        if let value = ProcessInfo.processInfo.environment["ELASTIC_TOKEN"], !value.isEmpty { return value }
        return nil
    }

    private func defaultName() -> String {
        let host = ProcessInfo.processInfo.hostName.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }
        let base = String(String(host).prefix(40)).trimmingCharacters(in: CharacterSet(charactersIn: "-"))
        return "\(base.isEmpty ? "worker" : base)-\(String(UInt16.random(in: 0...UInt16.max), radix: 16))"
    }
}
