/**
 * The server's REST API under `<base_url>/dss-containers/api/`, with its response shapes
 * (see `jupyter_dss_containers/schema/openapi.yaml`). Requests go through
 * `ServerConnection`, so the token, cookies and XSRF header are handled like every
 * Jupyter API.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export const API_PATH = 'dss-containers/api';

/** A refusal or failure of the API: the HTTP status and the server's `message`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** GET (or another method on) `<base_url>/dss-containers/api/<endpoint>`, as JSON. */
export async function requestAPI<T>(
  endpoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_PATH, endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(0, `the server could not be reached: ${String(error)}`);
  }
  const text = await response.text();
  let data: any = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message =
      (data && typeof data.message === 'string' && data.message) ||
      `${response.status} ${response.statusText}`.trim();
    throw new ApiError(response.status, message);
  }
  return data as T;
}

export interface ICodeEnv {
  name: string;
  description: string;
}

export interface IResources {
  summary: string;
  [key: string]: unknown;
}

export interface IConfig {
  name: string;
  description: string;
  backend: 'docker' | 'kubernetes';
  image: string;
  base_image: string | null;
  registry: string | null;
  target: string;
  resources: IResources;
  code_envs: ICodeEnv[];
  kernel_specs: string[];
  groups: string[];
}

export interface IConfigList {
  user: string;
  groups: string[];
  source: string;
  configs: IConfig[];
}

export type KernelState = 'starting' | 'running' | 'dead' | 'unknown';

/** One phase of a start (see the server's `phases.py`); `seconds` so far while current. */
export interface IPhase {
  phase: string;
  label: string;
  message: string;
  started: string;
  seconds: number;
  current: boolean;
}

export interface IKernel {
  id: string;
  name: string;
  execution_config: string;
  code_env: string | null;
  owner: string | null;
  image: string | null;
  workload_id: string | null;
  state: KernelState;
  exit_reason: string | null;
  /** the start's phase (`queued`: waiting for its turn or for GPUs, ...) and in words */
  phase?: string | null;
  message?: string | null;
  phases?: IPhase[];
  died?: { reason: string; at: number } | null;
  error: string | null;
  started: string | null;
  execution_state: string | null;
  last_activity: string | null;
  cpu_percent: number | null;
  memory_bytes: number | null;
  memory_limit: number | null;
  /** the daemon of a config over several (`docker.hosts`) it runs on, and why */
  host?: string | null;
  placement?: string | null;
}

export interface IKernelList {
  user: string;
  kernels: IKernel[];
}

/** Where a job is in its life; the last three are final. */
export type JobState = 'queued' | 'starting' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export const FINAL_JOB_STATES: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];

/** A job run by the server's job service (times are epoch seconds). */
export interface IJob {
  id: string;
  name?: string;
  kind: string;
  config: string;
  code_env?: string | null;
  owner: string;
  image: string;
  state: JobState;
  message: string;
  created: number;
  started?: number | null;
  finished?: number | null;
  exit_code?: number | null;
  phase?: string | null;
  phase_message?: string | null;
  phases?: IPhase[];
  error?: string | null;
  traceback?: string | null;
}

export interface IJobList {
  jobs: IJob[];
}

/** `GET jobs/<id>/logs?since=N`: output chunks from N on; ask again from `next`. */
export interface IJobLogs {
  id: string;
  state: string;
  next: number;
  output: { stream: 'stdout' | 'stderr'; text: string }[];
}

/** `GET kernels/<id>/logs?tail=N`: the last lines the kernel's container wrote. */
export interface IKernelLogs {
  id: string;
  workload_id: string | null;
  logs: string;
  error: string | null;
}

/** `POST configs/<name>/test`: what answered, or why nothing did. */
export interface ITestResult {
  ok: boolean;
  config: string;
  target: string;
  elapsed_seconds: number;
  engine?: string;
  version?: string;
  daemon?: string;
  error?: string;
}
