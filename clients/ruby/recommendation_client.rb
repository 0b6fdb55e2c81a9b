# frozen_string_literal: true

# Client for the MySanta recommendation service, for the Rails app.
#
# Copy this file into the Rails app (e.g. app/lib/recommendation_client.rb). It needs the
# `http` gem (gem "http"). Everything is configured from the environment:
#
#   RECOMMENDATION_SERVICE_URL       base URL (default http://localhost:8001)
#   RECOMMENDATION_SERVICE_USERNAME  basic-auth user, when the service has BASIC_AUTH_* set
#   RECOMMENDATION_SERVICE_PASSWORD  basic-auth password
#   RECOMMENDATION_SERVICE_OPEN_TIMEOUT  seconds to connect (default 0.5)
#   RECOMMENDATION_SERVICE_TIMEOUT   seconds to wait for an answer, per attempt (default 2)
#   RECOMMENDATION_SERVICE_RETRIES   extra attempts after a 503 or a refused connection (default 2)
#
# Errors: RequestError on a 4xx (the request is wrong: retrying cannot help; #errors
# names the fields), UnavailableError when the service cannot answer (503 after the
# retries, timeout, connection failure, or a 5xx). Both are RecommendationClient::Error.
require "http"
require "json"

class RecommendationClient
  class Error < StandardError; end

  # A 4xx: the service refused the request. #errors is [{"field" => ..., "rule" => ...}].
  class RequestError < Error
    attr_reader :status, :body

    def initialize(status, body)
      @status = status
      @body = body
      detail = body.is_a?(Hash) ? body["message"] : body.to_s[0, 200]
      super("recommendation service answered #{status}: #{detail}")
    end

    def errors
      body.is_a?(Hash) ? Array(body["errors"]) : []
    end
  end

  # No answer to use: 503 after the retries, a timeout, a connection failure or a 5xx.
  class UnavailableError < Error
    attr_reader :status, :attempts

    def initialize(message, status: nil, attempts: 1)
      @status = status
      @attempts = attempts
      super("recommendation service unavailable after #{attempts} attempt(s): #{message}")
    end
  end

  BACKOFF_BASE_S = 0.1 # 0.1 s, 0.2 s, 0.4 s, ... plus jitter; a Retry-After header wins, capped below
  BACKOFF_MAX_S = 2.0

  def self.get_popular_items(user_params:, **options)
    request(:post, "/popular", { user_params: user_params, **options })
  end

  def self.get_personalized_recommendations(user_id:, geo_id:, **options)
    request(:post, "/personalized", { user_id: user_id, geo_id: geo_id, **options })
  end

  # [{"category" => "books", "items" => 57}, ...]: the categories a request can name.
  def self.categories
    request(:get, "/categories")["categories"]
  end

  def self.base_url
    ENV.fetch("RECOMMENDATION_SERVICE_URL", "http://localhost:8001").chomp("/")
  end

  def self.request(method, path, body = nil)
    retries = Integer(ENV.fetch("RECOMMENDATION_SERVICE_RETRIES", "2"))
    attempt = 0
    loop do
      attempt += 1
      begin
        response = body.nil? ? http.public_send(method, base_url + path) : http.public_send(method, base_url + path, json: body)
      rescue HTTP::ConnectionError => e
        # Refused or reset before an answer: another attempt may reach a healthy worker.
        raise UnavailableError.new(e.message, attempts: attempt) if attempt > retries
        sleep(backoff(attempt, nil))
        next
      rescue HTTP::TimeoutError => e
        # The time budget is spent: answer the page without recommendations rather than wait again.
        raise UnavailableError.new("timeout (#{e.message})", attempts: attempt)
      end
      status = response.status.code
      return parse(response) if status < 300
      if status == 503 && attempt <= retries
        response.flush
        sleep(backoff(attempt, response.headers["Retry-After"]))
        next
      end
      raise RequestError.new(status, parse(response)) if status < 500
      raise UnavailableError.new(parse(response).to_s[0, 200], status: status, attempts: attempt)
    end
  end

  def self.http
    client = HTTP.timeout(connect: Float(ENV.fetch("RECOMMENDATION_SERVICE_OPEN_TIMEOUT", "0.5")),
                          read: Float(ENV.fetch("RECOMMENDATION_SERVICE_TIMEOUT", "2")),
                          write: Float(ENV.fetch("RECOMMENDATION_SERVICE_TIMEOUT", "2")))
    user = ENV["RECOMMENDATION_SERVICE_USERNAME"].to_s
    user.empty? ? client : client.basic_auth(user: user, pass: ENV.fetch("RECOMMENDATION_SERVICE_PASSWORD", ""))
  end

  def self.parse(response)
    JSON.parse(response.body.to_s)
  rescue JSON::ParserError
    response.body.to_s
  end

  def self.backoff(attempt, retry_after)
    seconds = Float(retry_after, exception: false) if retry_after
    seconds ||= BACKOFF_BASE_S * (2**(attempt - 1)) * (1 + rand * 0.5)
    [seconds, BACKOFF_MAX_S].min
  end

  private_class_method :request, :http, :parse, :backoff
end
