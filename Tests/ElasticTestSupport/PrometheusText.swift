import Foundation

/// A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: every
/// line must be `# HELP name text`, `# TYPE name type`, another `# ` comment, or a sample
/// `name{label="value",…} value [timestamp]`; every sample belongs to a family declared by a
/// `# TYPE` line before it; a family's lines are contiguous; no series appears twice; histogram
/// buckets carry `le`, are cumulative and end with `+Inf` equal to `_count`; counters are not
/// negative. Anything else is an error naming the line.
public struct PrometheusText: Sendable {
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public struct Family: Sendable {
        public var name: String
        public var type: String
        public var help: String?
        public var samples: [Sample] = []
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let line: Int
        public let text: String
        public let problem: String
        public var description: String { "exposition line \(line) '\(text)': \(problem)" }
    }

    public private(set) var families: [String: Family] = [:]

    /// The value of the series `name` with exactly `labels`.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        for family in families.values {
            if let sample = family.samples.first(where: { $0.name == name && $0.labels == labels }) { return sample.value }
        }
        return nil
    }

    /// Every sample named `name`.
    public func samples(_ name: String) -> [Sample] {
        families.values.flatMap { $0.samples.filter { $0.name == name } }
    }

    public static func parse(_ text: String) throws -> PrometheusText {
        var result = PrometheusText()
        guard !text.isEmpty else { return result }
        guard text.hasSuffix("\n") else { throw ParseError(line: 0, text: "", problem: "the text does not end with a line feed") }
        var helps: [String: String] = [:]
        var finished: Set<String> = []
        var current: String?
        var seen: Set<String> = []
        let lines = text.dropLast().split(separator: "\n", omittingEmptySubsequences: false)
        for (index, raw) in lines.enumerated() {
            let line = String(raw)
            func fail(_ problem: String) -> ParseError { ParseError(line: index + 1, text: line, problem: problem) }
            func enter(_ family: String) throws {
                if current == family { return }
                if let current { finished.insert(current) }
                if finished.contains(family) { throw fail("the lines of family \(family) are not contiguous") }
                current = family
            }
            if line.isEmpty { throw fail("empty line") }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
                guard parts.count >= 2, parts[0] == "#" else { throw fail("a comment is '# ' and text") }
                if parts[1] == "HELP" {
                    guard parts.count >= 3, isMetricName(parts[2]) else { throw fail("HELP without a valid metric name") }
                    let name = parts[2]
                    try enter(name)
                    if helps[name] != nil { throw fail("a second HELP for \(name)") }
                    if result.families[name]?.samples.isEmpty == false { throw fail("HELP after the samples of \(name)") }
                    let help = parts.count == 4 ? try unescapeHelp(parts[3], fail) : ""
                    helps[name] = help
                    result.families[name]?.help = help
                } else if parts[1] == "TYPE" {
                    guard parts.count == 4, isMetricName(parts[2]) else { throw fail("TYPE needs a metric name and a type") }
                    let name = parts[2]
                    guard ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else { throw fail("unknown type \(parts[3])") }
                    try enter(name)
                    if result.families[name] != nil { throw fail("a second TYPE for \(name)") }
                    result.families[name] = Family(name: name, type: parts[3], help: helps[name])
                }
                continue
            }
            let sample = try parseSample(line, fail)
            guard let family = familyName(of: sample.name, in: result.families) else {
                throw fail("sample \(sample.name) has no # TYPE line before it")
            }
            try enter(family)
            let type = result.families[family]!.type
            if type == "histogram" && sample.name == family + "_bucket" && sample.labels["le"] == nil { throw fail("a histogram bucket without le") }
            if type == "counter" && !(sample.value >= 0) { throw fail("a counter must not be negative") }
            let key = sample.name + "{" + sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") + "}"
            if !seen.insert(key).inserted { throw fail("series \(key) appears twice") }
            result.families[family]!.samples.append(sample)
        }
        for family in result.families.values where family.type == "histogram" {
            try checkHistogram(family)
        }
        return result
    }

    private static func familyName(of sample: String, in families: [String: Family]) -> String? {
        if let family = families[sample], family.type != "histogram" && family.type != "summary" { return sample }
        for suffix in ["_bucket", "_sum", "_count"] where sample.hasSuffix(suffix) {
            let base = String(sample.dropLast(suffix.count))
            if let family = families[base], family.type == "histogram" || (family.type == "summary" && suffix != "_bucket") { return base }
        }
        return nil
    }

    private static func checkHistogram(_ family: Family) throws {
        func fail(_ problem: String) -> ParseError { ParseError(line: 0, text: family.name, problem: problem) }
        var groups: [[String: String]: [(le: Double, value: Double)]] = [:]
        var counts: [[String: String]: Double] = [:]
        for sample in family.samples {
            var labels = sample.labels
            if sample.name == family.name + "_bucket" {
                guard let le = labels.removeValue(forKey: "le"), let bound = parseValue(le) else { throw fail("a bucket's le is not a number") }
                groups[labels, default: []].append((bound, sample.value))
            } else if sample.name == family.name + "_count" {
                counts[labels] = sample.value
            }
        }
        for (labels, buckets) in groups {
            let sorted = buckets.sorted { $0.le < $1.le }
            guard sorted.last?.le == .infinity else { throw fail("no +Inf bucket for \(labels)") }
            for (a, b) in zip(sorted, sorted.dropFirst()) where b.value < a.value { throw fail("buckets of \(labels) are not cumulative") }
            guard counts[labels] == sorted.last?.value else { throw fail("the +Inf bucket of \(labels) is not _count") }
        }
    }

    private static func parseSample(_ line: String, _ fail: (String) -> ParseError) throws -> Sample {
        let chars = Array(line.unicodeScalars)
        var i = 0
        var name = ""
        while i < chars.count, chars[i] != "{", chars[i] != " " { name.unicodeScalars.append(chars[i]); i += 1 }
        guard isMetricName(name) else { throw fail("'\(name)' is not a metric name") }
        var labels: [String: String] = [:]
        if i < chars.count, chars[i] == "{" {
            i += 1
            while true {
                guard i < chars.count else { throw fail("unterminated label set") }
                if chars[i] == "}" { i += 1; break }
                var label = ""
                while i < chars.count, chars[i] != "=" { label.unicodeScalars.append(chars[i]); i += 1 }
                guard isLabelName(label) else { throw fail("'\(label)' is not a label name") }
                guard i + 1 < chars.count, chars[i] == "=", chars[i + 1] == "\"" else { throw fail("label \(label) has no quoted value") }
                i += 2
                var value = ""
                while true {
                    guard i < chars.count else { throw fail("unterminated label value") }
                    let c = chars[i]
                    if c == "\"" { i += 1; break }
                    if c == "\\" {
                        guard i + 1 < chars.count else { throw fail("a dangling escape") }
                        switch chars[i + 1] {
                        case "\\": value += "\\"
                        case "\"": value += "\""
                        case "n": value += "\n"
                        default: throw fail("unknown escape in a label value")
                        }
                        i += 2
                        continue
                    }
                    value.unicodeScalars.append(c)
                    i += 1
                }
                if labels.updateValue(value, forKey: label) != nil { throw fail("label \(label) appears twice") }
                guard i < chars.count else { throw fail("unterminated label set") }
                if chars[i] == "," { i += 1 } else if chars[i] != "}" { throw fail("expected , or } after a label") }
            }
        }
        guard i < chars.count, chars[i] == " " else { throw fail("expected one space before the value") }
        let rest = String(String.UnicodeScalarView(chars[(i + 1)...])).split(separator: " ", omittingEmptySubsequences: false)
        guard rest.count == 1 || rest.count == 2, let value = parseValue(String(rest[0])) else { throw fail("the value is not a number") }
        if rest.count == 2, Int64(rest[1]) == nil { throw fail("the timestamp is not an integer") }
        return Sample(name: name, labels: labels, value: value)
    }

    static func parseValue(_ text: String) -> Double? {
        switch text {
        case "+Inf", "Inf": return .infinity
        case "-Inf": return -.infinity
        case "NaN": return .nan
        default:
            guard text.allSatisfy({ $0.isNumber || "+-.eE".contains($0) }) else { return nil }
            return Double(text)
        }
    }

    private static func unescapeHelp(_ text: String, _ fail: (String) -> ParseError) throws -> String {
        var result = ""
        var escaped = false
        for c in text {
            if escaped {
                switch c {
                case "\\": result += "\\"
                case "n": result += "\n"
                default: throw fail("unknown escape in HELP text")
                }
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                result.append(c)
            }
        }
        if escaped { throw fail("a dangling escape in HELP text") }
        return result
    }

    static func isMetricName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic || first == "_" || first == ":" else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == ":") }
    }

    static func isLabelName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic || first == "_" else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") }
    }
}
