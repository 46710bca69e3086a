// The Node clients of the matrix: `node clients.mjs CLIENT BASE_URL` makes one non-streamed and
// one streamed call with the official SDK and prints what it parsed, as JSON, on stdout.
// tests/test_clients.py runs it against the server on tests/cassettes/clients.
//
// Every client asks "Say hi to NAME in Portuguese"; the recorded answer is "Olá, NAME! Tudo bem?".

import Anthropic from "@anthropic-ai/sdk";
import { createAnthropic } from "@ai-sdk/anthropic";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";
import OpenAI from "openai";

const question = (name) => `Say hi to ${name} in Portuguese`;
const maxTokens = 256;

async function openaiChat(baseURL) {
  const client = new OpenAI({ baseURL, apiKey: "test", maxRetries: 0 });
  const messages = [{ role: "user", content: question("openai-node") }];
  const completion = await client.chat.completions.create({ model: "gpt-4o-mini", messages, max_tokens: maxTokens });
  const deltas = [];
  let streamTokens = null;
  const stream = await client.chat.completions.create({
    model: "gpt-4o-mini", messages, max_tokens: maxTokens, stream: true, stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    for (const choice of chunk.choices) if (choice.delta.content) deltas.push(choice.delta.content);
    if (chunk.usage) streamTokens = chunk.usage.total_tokens;
  }
  return {
    text: completion.choices[0].message.content,
    finish: completion.choices[0].finish_reason,
    tokens: completion.usage.total_tokens,
    deltas,
    stream_tokens: streamTokens,
  };
}

async function openaiResponses(baseURL) {
  const client = new OpenAI({ baseURL, apiKey: "test", maxRetries: 0 });
  const input = question("openai-node-responses");
  const response = await client.responses.create({ model: "gpt-4o-mini", input, max_output_tokens: maxTokens });
  const deltas = [];
  let streamText_ = null;
  const stream = await client.responses.create({ model: "gpt-4o-mini", input, max_output_tokens: maxTokens, stream: true });
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") deltas.push(event.delta);
    if (event.type === "response.completed") streamText_ = event.response.output[0].content[0].text;
  }
  return { text: response.output_text, tokens: response.usage.total_tokens, deltas, stream_text: streamText_ };
}

async function anthropicMessages(baseURL) {
  const client = new Anthropic({ baseURL, apiKey: "test", maxRetries: 0 });
  const messages = [{ role: "user", content: question("anthropic-node") }];
  const message = await client.messages.create({ model: "claude-haiku-4-5", max_tokens: maxTokens, messages });
  const deltas = [];
  const stream = client.messages.stream({ model: "claude-haiku-4-5", max_tokens: maxTokens, messages });
  stream.on("text", (text) => deltas.push(text));
  const final = await stream.finalMessage();
  return {
    text: message.content[0].text,
    stop: message.stop_reason,
    deltas,
    stream_stop: final.stop_reason,
    stream_tokens: final.usage.output_tokens,
  };
}

async function aiSdk(model, name) {
  const prompt = question(name);
  const generated = await generateText({ model, prompt, maxOutputTokens: maxTokens, maxRetries: 0 });
  const streamed = streamText({ model, prompt, maxOutputTokens: maxTokens, maxRetries: 0 });
  const deltas = [];
  for await (const text of streamed.textStream) deltas.push(text);
  return {
    text: generated.text,
    finish: generated.finishReason,
    tokens: generated.usage.totalTokens,
    deltas,
    stream_finish: await streamed.finishReason,
  };
}

const clients = {
  "openai-chat": openaiChat,
  "openai-responses": openaiResponses,
  anthropic: anthropicMessages,
  // @ai-sdk/openai: the default model speaks the Responses API, .chat() chat completions
  "ai-openai": (baseURL) => aiSdk(createOpenAI({ baseURL, apiKey: "test" })("gpt-4o-mini"), "ai-sdk-openai"),
  "ai-openai-chat": (baseURL) => aiSdk(createOpenAI({ baseURL, apiKey: "test" }).chat("gpt-4o-mini"), "ai-sdk-openai-chat"),
  "ai-anthropic": (baseURL) => aiSdk(createAnthropic({ baseURL, apiKey: "test" })("claude-haiku-4-5"), "ai-sdk-anthropic"),
};

const [client, baseURL] = process.argv.slice(2);
if (!clients[client] || !baseURL) {
  console.error(`usage: node clients.mjs {${Object.keys(clients).join(",")}} BASE_URL`);
  process.exit(2);
}
try {
  console.log(JSON.stringify(await clients[client](baseURL)));
} catch (error) {
  console.error(`${client}: ${error?.stack ?? error}`);
  if (error?.status) console.error(`status ${error.status}: ${JSON.stringify(error.error ?? error.responseBody ?? "")}`);
  if (error?.responseBody) console.error(`response body: ${error.responseBody}`);
  process.exit(1);
}
