"""The online side over Lab Streaming Layer (DESIGN §5-§6): binner, real-time loop, session log, replay.

    Runtime(model, input_spec, ...).run()   spikes in -> zeta -> predictions out, inside a budget
    Player(recording, name, ...).start()    a recorded session published as live LSL streams
    rerun_log(model, log)                   re-run a session log offline, prediction for prediction

Modules stay cheap to import; pylsl and onnxruntime load on first use.
"""
