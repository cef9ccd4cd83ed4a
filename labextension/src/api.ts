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
  error: string | null;
  started: string | null;
  execution_state: string | null;
  last_activity: string | null;
  cpu_percent: number | null;
  memory_bytes: number | null;
  memory_limit: number | null;
}

export interface IKernelList {
  user: string;
  kernels: IKernel[];
}

/** Jobs are not in this release (the route answers 501); the shape is provisional. */
export interface IJob {
  id: string;
  state?: string;
  execution_config?: string;
  kind?: string;
  [key: string]: unknown;
}

export interface IJobList {
  jobs: IJob[];
}
