// The API's JSON shapes (crates/domain): assistants, calls, turns with latency.

export type Provider = 'local' | 'openai';

export interface Tool {
  type: 'function' | 'end-call';
  name: string;
  description: string;
  parameters: Record<string, unknown>;
  url?: string | null;
  timeoutMs: number;
}

export interface AssistantSpec {
  name: string;
  systemPrompt: string;
  firstMessage: string | null;
  firstMessageMode: 'assistant-speaks-first' | 'user-speaks-first';
  transcriber: { provider: Provider; model: string | null; language: string | null; baseUrl: string | null };
  model: { provider: Provider; model: string | null; temperature: number; maxTokens: number; baseUrl: string | null };
  voice: { provider: Provider; voice: string | null; model: string | null; speed: number; baseUrl: string | null };
  endpointing: { silenceMs: number; vadConfidence: number; vadStartMs: number; minVolume: number };
  interruption: { enabled: boolean; minVoicedMs: number; minWords: number; backoffMs: number };
  silenceTimeoutSecs: number;
  maxDurationSecs: number;
  endCallPhrases: string[];
  tools: Tool[];
  recordingEnabled: boolean;
  metadata: Record<string, unknown>;
}

export interface Assistant extends AssistantSpec {
  id: string;
  createdAt: string;
  updatedAt: string;
}

export interface TurnLatency {
  endpointingMs?: number | null;
  sttMs?: number | null;
  llmFirstTokenMs?: number | null;
  ttsFirstAudioMs?: number | null;
  queueWaitMs?: number | null;
  voiceToVoiceMs?: number | null;
  responseMs?: number | null;
}

export interface CallTurn {
  idx: number;
  role: 'user' | 'assistant' | 'system' | 'tool';
  text: string;
  startedMs: number;
  interrupted: boolean;
  latency: TurnLatency;
  /** A caller's turn that could not be transcribed: no text, and why. */
  error?: { code: string; message: string };
}

export interface Call {
  id: string;
  assistantId: string;
  keyId: string | null;
  status: 'in-progress' | 'ended';
  endedReason: string | null;
  startedAt: string;
  endedAt: string | null;
  durationMs: number | null;
  instance: string | null;
  metadata: Record<string, unknown>;
  turns?: CallTurn[];
  recordingUrl?: string | null;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface CallToken {
  token: string;
  assistantId: string;
  expiresAt: string;
  agentPath: string;
}

export interface Me {
  kind: 'private' | 'public' | 'user';
  keyId: string | null;
  name: string | null;
  assistantIds: string[];
}
