// tmexp_link: the server side of tmexp's game protocol, running inside TMInterface 2 (AngelScript).
//
// The message table is documented in tmexp/envs/tmi/protocol.py; the numbers below must match it.
// The plugin listens on 127.0.0.1:<port>, accepts one client at a time and, at every synchronous point
// (a run step whose race time is a multiple of the on-step period, a checkpoint or lap change, a requested
// frame, a new connection), sends the message and blocks the game until the client echoes its type,
// executing the client's commands meanwhile. A client that stays silent longer than the timeout, or that
// sends a type this plugin does not know, is dropped and the plugin goes back to listening.

// ---- message numbers (protocol.py) ----------------------------------------------------------------------
const int RUN_STEP_SYNC = 1;
const int CHECKPOINT_COUNT_CHANGED_SYNC = 2;
const int LAP_COUNT_CHANGED_SYNC = 3;
const int REQUESTED_FRAME_SYNC = 4;
const int ON_CONNECT_SYNC = 5;

const int SET_SPEED = 16;
const int REWIND_TO_STATE = 17;
const int REWIND_TO_CURRENT_STATE = 18;
const int GET_SIMULATION_STATE = 19;
const int SET_INPUT_STATE = 20;
const int GIVE_UP = 21;
const int PREVENT_SIMULATION_FINISH = 22;
const int SHUTDOWN = 23;
const int EXECUTE_COMMAND = 24;
const int SET_TIMEOUT = 25;
const int RACE_FINISHED = 26;
const int REQUEST_FRAME = 27;
const int RESET_CAMERA = 28;
const int SET_ON_STEP_PERIOD = 29;
const int UNREQUEST_FRAME = 30;
const int TOGGLE_INTERFACE = 31;
const int IS_IN_MENUS = 32;
const int GET_INPUTS = 33;

// Returned by ServeUntilEcho when the client went away (dropped, timed out or said SHUTDOWN).
const int CLIENT_GONE = -2;
const uint DEFAULT_TIMEOUT_MS = 2000;
const string HOST = "127.0.0.1";

Net::Socket@ listener = null;
Net::Socket@ client = null;
uint16 listeningPort = 0;
uint timeoutMs = DEFAULT_TIMEOUT_MS;
int onStepPeriodMs = 10;
int frameWidth = -1;   // > 0 while a frame is requested
int frameHeight = -1;
bool connectPending = false;  // a client arrived while the game was still starting up
SimulationManager@ sim = GetSimulationManager();

// ---- connection -------------------------------------------------------------------------------------------

void StartListening(uint16 port)
{
    if (@listener !is null && port == listeningPort) {
        return;
    }
    // A later `tmexp_listen <port>` moves the plugin to that port.
    @listener = Net::Socket();
    listeningPort = port;
    if (!listener.Listen(HOST, port)) {
        log("tmexp_link: could not listen on " + HOST + ":" + port + " (port in use?)", Severity::Error);
        @listener = null;
        return;
    }
    log("tmexp_link: listening on " + HOST + ":" + port);
}

void DropClient(const string&in reason)
{
    log("tmexp_link: client dropped: " + reason);
    @client = null;
    timeoutMs = DEFAULT_TIMEOUT_MS;
    frameWidth = -1;
    frameHeight = -1;
    // Leave the game running normally for whoever comes next.
    sim.SetSpeed(1.0f);
}

// Sends a synchronous message (already written by the caller) and serves commands until the client echoes
// `expected`. Returns the echoed type, or CLIENT_GONE.
int ServeUntilEcho(int expected)
{
    uint64 waitStart = Time::Now;
    while (@client !is null) {
        if (client.Available < 4) {
            if (Time::Now - waitStart > timeoutMs) {
                DropClient("no answer within " + timeoutMs + " ms");
                return CLIENT_GONE;
            }
            continue;
        }
        int type = client.ReadInt32();
        if (type == expected) {
            return type;
        }
        if (!HandleCommand(type)) {
            return CLIENT_GONE;
        }
        waitStart = Time::Now;  // the client is alive: the timeout counts from its last message
    }
    return CLIENT_GONE;
}

void SendSync(int type)
{
    client.Write(type);
    ServeUntilEcho(type);
}

// Executes one command; false when the client is gone afterwards.
bool HandleCommand(int type)
{
    switch (type) {
        case SET_SPEED: {
            sim.SetSpeed(client.ReadFloat());
            return true;
        }
        case REWIND_TO_STATE: {
            int length = client.ReadInt32();
            array<uint8>@ bytes = client.ReadBytes(length);
            if (sim.InRace) {
                SimulationState state(bytes);
                sim.RewindToState(state);
            }
            return true;
        }
        case REWIND_TO_CURRENT_STATE: {
            if (sim.InRace) {
                sim.RewindToState(sim.SaveState());
            }
            return true;
        }
        case GET_SIMULATION_STATE: {
            array<uint8>@ bytes = sim.SaveState().ToArray();
            client.Write(int(bytes.Length));
            client.Write(bytes);
            return true;
        }
        case SET_INPUT_STATE: {
            uint8 left = client.ReadUint8();
            uint8 right = client.ReadUint8();
            uint8 accelerate = client.ReadUint8();
            uint8 brake = client.ReadUint8();
            if (sim.InRace) {
                sim.SetInputState(InputType::Left, left > 0 ? 1 : 0);
                sim.SetInputState(InputType::Right, right > 0 ? 1 : 0);
                sim.SetInputState(InputType::Up, accelerate > 0 ? 1 : 0);
                sim.SetInputState(InputType::Down, brake > 0 ? 1 : 0);
            }
            return true;
        }
        case GIVE_UP: {
            if (sim.InRace) {
                sim.GiveUp();
            }
            return true;
        }
        case PREVENT_SIMULATION_FINISH: {
            if (sim.InRace) {
                sim.PreventSimulationFinish();
            }
            return true;
        }
        case SHUTDOWN: {
            DropClient("client said goodbye");
            return false;
        }
        case EXECUTE_COMMAND: {
            int length = client.ReadInt32();
            string command = client.ReadString(length);
            ExecuteCommand(command);
            return true;
        }
        case SET_TIMEOUT: {
            timeoutMs = client.ReadUint32();
            return true;
        }
        case RACE_FINISHED: {
            bool finished = sim.PlayerInfo.RaceFinished || sim.TickTime > sim.RaceTime;
            client.Write(finished ? 1 : 0);
            return true;
        }
        case REQUEST_FRAME: {
            frameWidth = client.ReadInt32();
            frameHeight = client.ReadInt32();
            return true;
        }
        case RESET_CAMERA: {
            sim.ResetCamera();
            return true;
        }
        case SET_ON_STEP_PERIOD: {
            onStepPeriodMs = client.ReadInt32();
            if (onStepPeriodMs <= 0) {
                onStepPeriodMs = 10;
            }
            return true;
        }
        case UNREQUEST_FRAME: {
            frameWidth = -1;
            frameHeight = -1;
            return true;
        }
        case TOGGLE_INTERFACE: {
            ToggleRaceInterface(client.ReadInt32() > 0);
            return true;
        }
        case IS_IN_MENUS: {
            client.Write(GetCurrentGameState() == TM::GameState::Menus ? 1 : 0);
            return true;
        }
        case GET_INPUTS: {
            string text = sim.get_InputEvents().ToCommandsText();
            client.Write(int(text.Length));
            client.Write(text);
            return true;
        }
    }
    // The payload length of an unknown type is unknown too: the stream cannot be trusted any more.
    DropClient("unknown message type " + type + " (tmexp and this plugin disagree on the protocol)");
    return false;
}

// ---- game callbacks ---------------------------------------------------------------------------------------

void OnRunStep(SimulationManager@ simManager)
{
    if (@client is null) {
        return;
    }
    int raceTime = simManager.RaceTime;
    // TickTime runs past RaceTime once the race is over: report those steps too so the client sees the end.
    if (raceTime % onStepPeriodMs == 0 || simManager.TickTime > raceTime) {
        client.Write(RUN_STEP_SYNC);
        client.Write(raceTime);
        ServeUntilEcho(RUN_STEP_SYNC);
    }
}

void OnCheckpointCountChanged(SimulationManager@ simManager, int current, int target)
{
    if (@client is null) {
        return;
    }
    client.Write(CHECKPOINT_COUNT_CHANGED_SYNC);
    client.Write(current);
    client.Write(target);
    ServeUntilEcho(CHECKPOINT_COUNT_CHANGED_SYNC);
}

void OnLapCountChanged(SimulationManager@ simManager, int current, int target)
{
    if (@client is null) {
        return;
    }
    client.Write(LAP_COUNT_CHANGED_SYNC);
    client.Write(current);
    client.Write(target);
    ServeUntilEcho(LAP_COUNT_CHANGED_SYNC);
}

void OnGameStateChanged(TM::GameState state)
{
    if (connectPending && @client !is null && state == TM::GameState::Menus) {
        connectPending = false;
        SendSync(ON_CONNECT_SYNC);
    }
}

void Render()
{
    if (@listener is null) {
        return;
    }
    Net::Socket@ incoming = listener.Accept(0);
    if (@incoming !is null) {
        @client = incoming;
        client.NoDelay = true;
        log("tmexp_link: client connected");
        // Commands such as loading a map need the game past its start-up screen.
        if (GetCurrentGameState() == TM::GameState::StartUp) {
            connectPending = true;
        } else {
            SendSync(ON_CONNECT_SYNC);
        }
    }
    if (@client !is null && frameWidth > 0 && frameHeight > 0) {
        array<uint8>@ frame = Graphics::CaptureScreenshot(vec2(frameWidth, frameHeight));
        // One frame per request: the client asks again for the next one.
        frameWidth = -1;
        frameHeight = -1;
        client.Write(REQUESTED_FRAME_SYNC);
        client.Write(frame);
        ServeUntilEcho(REQUESTED_FRAME_SYNC);
    }
}

// ---- start-up ---------------------------------------------------------------------------------------------

// `tmexp_listen [port]`: start serving (the launch command runs it with the collector's port).
void OnListenCommand(int fromTime, int toTime, const string&in commandLine, const array<string>&in args)
{
    uint16 port = uint16(args.Length > 0 ? Text::ParseUInt(args[0]) : uint(GetVariableDouble("tmexp_port")));
    StartListening(port);
}

void Main()
{
    RegisterVariable("tmexp_port", 8478);
    RegisterCustomCommand("tmexp_listen", "tmexp: listen for the training client, optional port", OnListenCommand);
    // Queued rather than called: commands from the launch command line (e.g. `set tmexp_port 8479`) run first.
    CommandList startup;
    startup.Content = "tmexp_listen";
    startup.Process();
}

PluginInfo@ GetPluginInfo()
{
    PluginInfo info;
    info.Author = "tmexp";
    info.Name = "tmexp_link";
    info.Description = "Serves tmexp's training client over a local socket (protocol: tmexp/envs/tmi/protocol.py)";
    info.Version = "1";
    return info;
}
